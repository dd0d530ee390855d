//! Numbers and times as the console prints them: thousands separators, short rates, UTC clock.

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate with one decimal and thousands separators: `1,234.5`.
pub fn rate(value: f64) -> String {
    if !value.is_finite() || value < 0.0 {
        return "-".to_owned();
    }
    let tenths = (value * 10.0).round() as u64;
    format!("{}.{}", thousands(tenths / 10), tenths % 10)
}

/// A rate in a narrow column: one decimal under 100, whole numbers above (`1,488`).
pub fn rate_short(value: f64) -> String {
    if value.is_finite() && value >= 99.95 {
        thousands(value.round() as u64)
    } else {
        rate(value)
    }
}

/// Days of supply: `-` when unknown, one decimal under 10, whole days up to 999, then `999+`.
pub fn days(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(d) if !d.is_finite() => "-".to_owned(),
        Some(d) if d < 10.0 => format!("{d:.1}"),
        Some(d) if d < 999.5 => format!("{d:.0}"),
        Some(_) => "999+".to_owned(),
    }
}

/// A share as a whole percentage; `-` when there is no target.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    format!("{:.0}%", part as f64 * 100.0 / whole as f64)
}

/// Milliseconds with a precision that suits their size.
pub fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{} ms", thousands(ms.round() as u64))
    }
}

/// Unix seconds as `HH:MM:SS` (UTC).
pub fn clock(unix: i64) -> String {
    local_clock(unix, 0)
}

/// Unix seconds as `HH:MM:SS` in a time zone `offset` seconds east of UTC.
pub fn local_clock(unix: i64, offset: i64) -> String {
    let s = (unix + offset).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

/// A time zone's name for a clock: `UTC`, `UTC+7`, `UTC+5:30`, `UTC-3`.
pub fn zone(offset: i64) -> String {
    if offset == 0 {
        return "UTC".to_owned();
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let (hours, minutes) = (offset.abs() / 3600, offset.abs() % 3600 / 60);
    if minutes == 0 {
        format!("UTC{sign}{hours}")
    } else {
        format!("UTC{sign}{hours}:{minutes:02}")
    }
}

/// A duration in seconds, short: `42 s`, `12 min`, `3 h 5 min`.
pub fn ago(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 120 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {} min", s / 3600, s % 3600 / 60)
    }
}

/// A lag in milliseconds, short enough for the overview: `0.4 s` under ten seconds, then
/// `42 s`, `12 min`, and hours with a decimal (`3.1 h`).
pub fn lag(ms: u64) -> String {
    let seconds = ms / 1_000;
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else if seconds < 120 {
        format!("{seconds} s")
    } else if seconds < 3_600 {
        format!("{} min", seconds / 60)
    } else {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    }
}

/// The columns `text` takes on a terminal: combining marks take none, wide characters two.
pub fn width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// Cuts `text` to at most `width` terminal columns, marking the cut with `…`. Never splits a
/// character from the combining marks after it.
pub fn fit(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// `text` cut to `max` columns and padded with spaces to exactly `max` columns (what
/// `format!("{:<max$}")` does for plain ASCII, by display width).
pub fn pad(text: &str, max: usize) -> String {
    let mut out = fit(text, max);
    let used = width(&out);
    out.extend(std::iter::repeat_n(' ', max.saturating_sub(used)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rate(1234.56), "1,234.6");
        assert_eq!(rate(0.04), "0.0");
        assert_eq!(rate_short(99.94), "99.9");
        assert_eq!(rate_short(1488.4), "1,488");
        assert_eq!(days(None), "-");
        assert_eq!(days(Some(2.345)), "2.3");
        assert_eq!(days(Some(42.6)), "43");
        assert_eq!(days(Some(12_000.0)), "999+");
        assert_eq!(percent(1, 3), "33%");
        assert_eq!(percent(1, 0), "-");
        assert_eq!(millis(1.234), "1.23 ms");
        assert_eq!(millis(12.34), "12.3 ms");
        assert_eq!(millis(1234.0), "1,234 ms");
    }

    #[test]
    fn times_and_text() {
        assert_eq!(clock(1_893_571_261), "08:01:01");
        assert_eq!(ago(42), "42 s");
        assert_eq!(ago(725), "12 min");
        assert_eq!(ago(11_100), "3 h 5 min");
        assert_eq!(lag(420), "0.4 s");
        assert_eq!(lag(9_949), "9.9 s");
        assert_eq!(lag(75_000), "75 s");
        assert_eq!(lag(725_000), "12 min");
        assert_eq!(lag(11_100_000), "3.1 h");
        assert_eq!(fit("Bach Mai hospital", 8), "Bach Ma…");
        assert_eq!(fit("short", 8), "short");
        assert_eq!(local_clock(1_893_571_261, 7 * 3600), "15:01:01");
        assert_eq!(zone(0), "UTC");
        assert_eq!(zone(25_200), "UTC+7");
        assert_eq!(zone(19_800), "UTC+5:30");
        assert_eq!(zone(-10_800), "UTC-3");
    }

    #[test]
    fn widths_of_vietnamese_and_wide_text() {
        // Precomposed, and with combining marks (as some keyboards type it): 8 columns each.
        assert_eq!(width("Bạch Mai"), 8);
        assert_eq!(width("Ba\u{323}ch Mai"), 8);
        assert_eq!(fit("Ba\u{323}ch Mai", 4), "Ba\u{323}c…");
        assert_eq!(width("東京"), 4);
        assert_eq!(fit("東京都", 4), "東…");
        assert_eq!(pad("東", 4), "東  ");
        assert_eq!(pad("Đà Nẵng", 9), "Đà Nẵng  ");
    }
}
