//! Rendering tests: the console drawn on ratatui's `TestBackend`, compared line by line with
//! the screen a person would see.

#![allow(clippy::unwrap_used)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use vaxcamp_console::allocation::{
    AllocationAnswer, AllocationQuery, Level, Plan, PlanLine, PlanRequest,
};
use vaxcamp_console::app::{App, Event};
use vaxcamp_console::feed::{
    Alert, Analytics, Doses, ErrorCount, Errors, FeedEvent, Latency, ProductStock, Queues,
    Registrations, SeriesCounts, SiteLive, Snapshot, Stock, Thresholds,
};
use vaxcamp_console::theme::Theme;

/// 2030-01-02 08:00:00 UTC.
const NOW: i64 = 1_893_571_200;

fn product(name: &str, remaining: u64, uptake: f64) -> ProductStock {
    ProductStock {
        product: name.into(),
        remaining,
        uptake_per_day: Some(uptake),
        days_of_supply: (uptake > 0.0).then(|| remaining as f64 / uptake),
    }
}

#[allow(clippy::too_many_arguments)]
fn site(
    id: &str,
    name: &str,
    province: &str,
    district: &str,
    capacity: u32,
    today: u64,
    rate: f64,
    stock: Vec<ProductStock>,
) -> SiteLive {
    let remaining: u64 = stock.iter().map(|p| p.remaining).sum();
    let uptake: f64 = stock.iter().filter_map(|p| p.uptake_per_day).sum();
    let days = (uptake > 0.0).then(|| remaining as f64 / uptake);
    SiteLive {
        site_id: id.into(),
        name: name.into(),
        province: province.into(),
        district: district.into(),
        commune: None,
        daily_capacity: capacity,
        doses_today: today,
        doses_since_start: today,
        doses_total: today + 10_000,
        rate_per_s: rate,
        last_dose_at: (today > 0).then_some(NOW - 4),
        remaining,
        uptake_per_day: Some(uptake),
        days_of_supply: days,
        low_stock: remaining == 0 || days.is_some_and(|d| d < 3.0),
        silent: today == 0,
        errors_last_minute: 0,
        errors_since_start: 0,
        stock,
    }
}

/// Two provinces, three districts, four sites: one low on stock, one out of stock and silent.
/// Province 01 and its district 001 have names; province 79 and district 005 have none, as
/// areas left out of `vaxcamp import areas` do, and are shown by their codes.
fn campaign() -> Snapshot {
    let mut sites = vec![
        site(
            "hcm-01",
            "Cho Ray",
            "79",
            "760",
            3000,
            2500,
            1.2,
            vec![product("SPIKEVAX", 300_000, 50_000.0)],
        ),
        site(
            "hn-01",
            "Bach Mai",
            "01",
            "001",
            2000,
            1200,
            0.5,
            vec![
                product("COMIRNATY", 40_000, 20_000.0),
                product("SPIKEVAX", 8_000, 4_000.0),
            ],
        ),
        site(
            "hn-02",
            "Viet Duc",
            "01",
            "001",
            1500,
            300,
            0.1,
            vec![product("COMIRNATY", 90_000, 6_000.0)],
        ),
        site(
            "hn-03",
            "Thanh Nhan",
            "01",
            "005",
            1000,
            0,
            0.0,
            vec![product("COMIRNATY", 0, 0.0)],
        ),
    ];
    // Bach Mai had a few refusals in the last minute.
    sites[1].errors_last_minute = 2;
    sites[1].errors_since_start = 9;
    Snapshot {
        generated_at: NOW,
        started_at: NOW - 7_200,
        today_since: NOW - 8 * 3_600,
        // UTC, so the clocks on screen are the same numbers as the constants here.
        utc_offset_s: 0,
        backend: "embedded".into(),
        thresholds: Thresholds::default(),
        doses: Doses {
            total: 1_234_567,
            today: 4_000,
            since_start: 3_900,
            per_s_now: 1.8,
            per_s_1m: 1.6,
            history_per_s: (0..600u64).map(|s| s % 4).collect(),
            history_end: NOW,
        },
        certificates: SeriesCounts { partial: 2_600, complete: 1_300 },
        registrations: Registrations { total: 1_000_000, since_start: 420 },
        checkins_since_start: 4_100,
        certificates_signed: 3_900,
        latency_ms: Latency { window_s: 60, count: 3_900, p50_ms: 2.1, p99_ms: 9.8, p999_ms: 24.5, max_ms: 80.0 },
        queues: Queues { capacity: 1024, depths: vec![0, 3] },
        errors: Errors {
            total: 12,
            last_minute: 2,
            by_kind: vec![
                ErrorCount { kind: "refused:too_early".into(), count: 9 },
                ErrorCount { kind: "busy".into(), count: 3 },
            ],
        },
        stock: Stock {
            remaining: 438_000,
            uptake_per_day: Some(80_000.0),
            days_of_supply: Some(5.475),
            by_product: vec![product("COMIRNATY", 130_000, 26_000.0), product("SPIKEVAX", 308_000, 54_000.0)],
        },
        sites,
        area_names: [("01", "Hà Nội"), ("01/001", "Ba Đình")]
            .into_iter()
            .map(|(key, name)| (key.to_owned(), name.to_owned()))
            .collect(),
        // As an older server sends it: no analytics figures.
        analytics: None,
        alerts: vec![
            Alert { severity: "critical".into(), kind: "out_of_stock".into(), site_id: Some("hn-03".into()), shard: None, message: "hn-03 (Thanh Nhan): no doses left in stock".into() },
            Alert { severity: "warning".into(), kind: "low_stock".into(), site_id: Some("hn-01".into()), shard: None, message: "hn-01 (Bach Mai): 2.0 days of supply (48000 doses)".into() },
            Alert { severity: "warning".into(), kind: "site_silent".into(), site_id: Some("hn-03".into()), shard: None, message: "hn-03 (Thanh Nhan): no dose since the server started 120 min ago, while other sites are active".into() },
        ],
    }
}

/// What the server sends for a campaign with no sites yet, a minute after it started.
fn empty() -> Snapshot {
    Snapshot {
        generated_at: NOW,
        started_at: NOW - 60,
        today_since: NOW - 60,
        backend: "embedded".into(),
        doses: Doses {
            history_per_s: vec![0; 600],
            history_end: NOW,
            ..Doses::default()
        },
        queues: Queues {
            capacity: 1024,
            depths: vec![0; 4],
        },
        ..Snapshot::default()
    }
}

fn app_with(snapshot: Snapshot, theme: Theme) -> App {
    let mut app = App::new("http://127.0.0.1:8080", theme, NOW);
    app.update(Event::Feed(FeedEvent::Snapshot(Box::new(snapshot))));
    app
}

fn key(app: &mut App, code: KeyCode) {
    app.update(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn draw(app: &App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .unwrap();
    terminal.backend().buffer().clone()
}

/// The text of each line of a buffer.
fn lines(buffer: &Buffer) -> Vec<String> {
    (0..buffer.area.height)
        .map(|y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
        })
        .collect()
}

fn assert_screen(buffer: &Buffer, expected: &[&str]) {
    assert_lines(buffer, 0, expected);
    assert_eq!(
        usize::from(buffer.area.height),
        expected.len(),
        "the whole screen was compared"
    );
}

/// Compares the lines from `first` on with `expected`, one line at a time, so that a failure
/// names the line that differs.
fn assert_lines(buffer: &Buffer, first: usize, expected: &[&str]) {
    let actual = lines(buffer);
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(
            actual[first + i],
            *want,
            "line {} differs; the screen was:\n{}",
            first + i,
            actual.join("\n")
        );
    }
}

#[test]
fn overview_at_80x24() {
    let app = app_with(campaign(), Theme::colour());
    assert_screen(
        &draw(&app, 80, 24),
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3                 ● live 08:00:00 UTC ",
            "┌ Doses ───────────────────────────────────────────────────────────────────────┐",
            "│ now 1.8/s   last min 1.6/s   today 4,000   all time 1,234,567                │",
            "│   ███████████████████████████████████████████████████████████████████████████│",
            "│   ███████████████████████████████████████████████████████████████████████████│",
            "│   ███████████████████████████████████████████████████████████████████████████│",
            "│ last 10 min, 8 s a bar, peak 1.5/s                                           │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ Campaign ────────────────────────────┐┌ Server ──────────────────────────────┐",
            "│ Certificates  partial  2,600         ││ Latency   p50 2.10 ms  p99 9.80 ms   │",
            "│               complete 1,300         ││ (1 min)   p99.9 24.5 ms  of 3,900    │",
            "│ Registered    1,000,000              ││ Queues    3 waiting in 2 shards      │",
            "│               +420 since start       ││           fullest 3 of 1024 (0%)     │",
            "│ Check-ins     4,100 since start      ││ Errors    12 since start             │",
            "│ Stock         438,000 doses          ││           2 in the last minute       │",
            "│               5.5 days of supply     ││   refused:too_early                 9│",
            "│ Alerts        3 (1 critical)         ││   busy                              3│",
            "│                                      ││                                      │",
            "│                                      ││                                      │",
            "│                                      ││                                      │",
            "│                                      ││                                      │",
            "│                                      ││                                      │",
            "└──────────────────────────────────────┘└──────────────────────────────────────┘",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
}

#[test]
fn drill_down_from_nation_to_site_and_back() {
    let mut app = app_with(campaign(), Theme::colour());
    key(&mut app, KeyCode::Tab);
    assert_screen(
        &draw(&app, 80, 24),
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3                 ● live 08:00:00 UTC ",
            "┌ Nation · by name ────────────────────────────────────────────────────────────┐",
            "│  Province▼        Sites     Today    /min  Share      Stock  Days Flags      │",
            "│> Hà Nội               3     1,500    36.0    33%    138,000   4.6 2 low 1 sil│",
            "│  Province 79          1     2,500    72.0    83%    300,000   6.0            │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
    key(&mut app, KeyCode::Enter);
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation › Hà Nội · by name ───────────────────────────────────────────────────┐",
            "│  District▼        Sites     Today    /min  Share      Stock  Days Flags      │",
            "│> Ba Đình              2     1,500    36.0    43%    138,000   4.6 1 low      │",
            "│  District 005         1         0     0.0     0%          0     - 1 low 1 sil│",
            "│                                                                              │",
        ],
    );
    key(&mut app, KeyCode::Enter);
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation › Hà Nội › Ba Đình · by name ─────────────────────────────────────────┐",
            "│  Site▼              Err     Today    /min  Share      Stock  Days Flags      │",
            "│> Bach Mai             2     1,200    30.0    60%     48,000   2.0 LOW        │",
            "│  Viet Duc             0       300     6.0    20%     90,000    15            │",
            "│                                                                              │",
        ],
    );
    key(&mut app, KeyCode::Enter);
    assert_screen(
        &draw(&app, 80, 24),
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3                 ● live 08:00:00 UTC ",
            "┌ Nation › Hà Nội › Ba Đình › hn-01 ───────────────────────────────────────────┐",
            "│ Bach Mai (hn-01) province Hà Nội · district Ba Đình                          │",
            "│ Today        1,200 doses, 60% of 2,000 a day                                 │",
            "│ Since start  1,200   all time 11,200                                         │",
            "│ Rate         30.0/min over the last minute                                   │",
            "│ Last dose    07:59:56 UTC (4 s ago)                                          │",
            "│ Errors       2 in the last minute, 9 since start                             │",
            "│ Stock        48,000 doses · 24,000/day · 2.0 days  LOW                       │",
            "│                                                                              │",
            "│ Product               Stock     /day   Days                                  │",
            "│ COMIRNATY            40,000   20,000    2.0 LOW                              │",
            "│ SPIKEVAX              8,000    4,000    2.0 LOW                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
    // Esc goes up one level at a time, selecting the row it came from.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.path, ["01", "001"]);
    assert_lines(
        &draw(&app, 80, 24),
        3,
        &["│> Bach Mai             2     1,200    30.0    60%     48,000   2.0 LOW        │"],
    );
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Esc);
    assert!(app.path.is_empty());
    key(&mut app, KeyCode::Esc);
    assert!(app.path.is_empty(), "Esc at the top stays there");
}

#[test]
fn sort_cycles_columns_and_filter_narrows_rows() {
    let mut app = app_with(campaign(), Theme::colour());
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('s'));
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation · by doses today ─────────────────────────────────────────────────────┐",
            "│  Province         Sites    ▼Today    /min  Share      Stock  Days Flags      │",
            "│  Province 79          1     2,500    72.0    83%    300,000   6.0            │",
            // The selection stays on the province it was on, wherever the sort puts it.
            "│> Hà Nội               3     1,500    36.0    33%    138,000   4.6 2 low 1 sil│",
        ],
    );
    // Days of supply: fewest first.
    for _ in 0..4 {
        key(&mut app, KeyCode::Char('s'));
    }
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation · by days of supply ──────────────────────────────────────────────────┐",
            "│  Province         Sites     Today    /min  Share      Stock ▼Days Flags      │",
            "│> Hà Nội               3     1,500    36.0    33%    138,000   4.6 2 low 1 sil│",
            "│  Province 79          1     2,500    72.0    83%    300,000   6.0            │",
        ],
    );
    key(&mut app, KeyCode::Char('s'));
    assert_eq!(
        app.sort,
        vaxcamp_console::app::SortColumn::Name,
        "s wraps around"
    );

    // `/` types a filter; Enter keeps it; Esc clears it.
    key(&mut app, KeyCode::Char('/'));
    key(&mut app, KeyCode::Char('7'));
    key(&mut app, KeyCode::Char('9'));
    assert_lines(
        &draw(&app, 80, 24),
        23,
        &[" Filter: 79_   Enter keep · Esc clear                                           "],
    );
    key(&mut app, KeyCode::Enter);
    let screen = draw(&app, 80, 24);
    assert_lines(
        &screen,
        1,
        &[
            "┌ Nation · by name · filter \"79\" ──────────────────────────────────────────────┐",
            "│  Province▼        Sites     Today    /min  Share      Stock  Days Flags      │",
            "│> Province 79          1     2,500    72.0    83%    300,000   6.0            │",
            "│                                                                              │",
        ],
    );
    // Enter descends into the filtered row; the filter does not follow.
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.path, ["79"]);
    assert!(app.filter.is_empty());
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('/'));
    key(&mut app, KeyCode::Char('x'));
    key(&mut app, KeyCode::Enter);
    assert_lines(
        &draw(&app, 80, 24),
        2,
        &["│ Nothing matches the filter. Esc clears it.                                   │"],
    );
    key(&mut app, KeyCode::Esc);
    assert!(app.filter.is_empty());
    assert_eq!(app.area_rows().len(), 2);
}

#[test]
fn stock_view_puts_low_stock_first_and_highlights_it() {
    let mut app = app_with(campaign(), Theme::colour());
    key(&mut app, KeyCode::Char('3'));
    let screen = draw(&app, 80, 24);
    assert_screen(
        &screen,
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3                 ● live 08:00:00 UTC ",
            "┌ Stock · Nation · under 3 days highlighted ───────────────────────────────────┐",
            "│ COMIRNATY         130,000 doses     26,000/day    5.0 days                   │",
            "│ SPIKEVAX          308,000 doses     54,000/day    5.7 days                   │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ By site · by days of supply ─────────────────────────────────────────────────┐",
            "│  Site                             Product           Stock     /day  ▲Days    │",
            "│> Bach Mai                         COMIRNATY        40,000   20,000    2.0 LOW│",
            "│  Bach Mai                         SPIKEVAX          8,000    4,000    2.0 LOW│",
            "│  Thanh Nhan                       COMIRNATY             0        0      - OUT│",
            "│  Cho Ray                          SPIKEVAX        300,000   50,000    6.0    │",
            "│  Viet Duc                         COMIRNATY        90,000    6,000     15    │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ Shipment allocation ─────────────────────────────────────────────────────────┐",
            "│ Press a to propose how to split a shipment of one product.                   │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
    // Low rows are yellow, the empty one red; the healthy ones keep the default colour.
    assert_eq!(screen[(40, 8)].fg, Color::Yellow, "Bach Mai, SPIKEVAX");
    assert_eq!(screen[(40, 9)].fg, Color::Red, "Thanh Nhan, out of stock");
    assert_eq!(screen[(40, 10)].fg, Color::Reset, "Cho Ray");
    // From the stock view, Enter opens the selected site.
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, vaxcamp_console::View::Areas);
    assert_eq!(app.path, ["01", "001", "hn-01"]);
}

#[test]
fn stock_view_follows_the_drill_down() {
    let mut app = app_with(campaign(), Theme::colour());
    app.path = vec!["01".into(), "001".into(), "hn-01".into()];
    key(&mut app, KeyCode::Char('3'));
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Stock · Nation › Hà Nội › Ba Đình › hn-01 · under 3 days highlighted ────────┐",
            "│ COMIRNATY          40,000 doses     20,000/day    2.0 days                   │",
            "│ SPIKEVAX            8,000 doses      4,000/day    2.0 days                   │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ By site · by days of supply ─────────────────────────────────────────────────┐",
            "│  Site                             Product           Stock     /day  ▲Days    │",
            "│> Bach Mai                         COMIRNATY        40,000   20,000    2.0 LOW│",
            "│  Bach Mai                         SPIKEVAX          8,000    4,000    2.0 LOW│",
        ],
    );
}

#[test]
fn monochrome_uses_no_colour_and_still_marks_low_stock() {
    let mut app = app_with(campaign(), Theme::monochrome());
    for view in ['1', '2', '3', '4'] {
        key(&mut app, KeyCode::Char(view));
        let screen = draw(&app, 80, 24);
        for cell in screen.content() {
            assert_eq!(
                (cell.fg, cell.bg),
                (Color::Reset, Color::Reset),
                "view {view}"
            );
        }
    }
    key(&mut app, KeyCode::Char('3'));
    let screen = draw(&app, 80, 24);
    assert_lines(
        &screen,
        8,
        &["│  Bach Mai                         SPIKEVAX          8,000    4,000    2.0 LOW│"],
    );
    assert!(screen[(40, 8)].modifier.contains(Modifier::BOLD));
    assert!(
        screen[(40, 7)].modifier.contains(Modifier::REVERSED),
        "the selection"
    );
    assert!(!screen[(40, 10)].modifier.contains(Modifier::BOLD));
}

#[test]
fn no_color_selects_monochrome() {
    use std::ffi::OsStr;
    assert_eq!(
        Theme::for_no_color(Some(OsStr::new("1"))),
        Theme::monochrome()
    );
    assert_eq!(Theme::for_no_color(Some(OsStr::new(""))), Theme::colour());
    assert_eq!(Theme::for_no_color(None), Theme::colour());
}

#[test]
fn alerts_view_wraps_long_messages_and_opens_the_site() {
    let mut app = app_with(campaign(), Theme::colour());
    key(&mut app, KeyCode::Char('4'));
    assert_screen(
        &draw(&app, 80, 24),
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3                 ● live 08:00:00 UTC ",
            "┌ Alerts · 3 ──────────────────────────────────────────────────────────────────┐",
            "│  Sev  Kind            What                                                   │",
            "│> CRIT out of stock    hn-03 (Thanh Nhan): no doses left in stock             │",
            "│  WARN low stock       hn-01 (Bach Mai): 2.0 days of supply (48000 doses)     │",
            "│  WARN site silent     hn-03 (Thanh Nhan): no dose since the server started   │",
            "│                       120 min ago, while other sites are active              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, vaxcamp_console::View::Areas);
    assert_eq!(app.path, ["01", "005", "hn-03"]);
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation › Hà Nội › 005 › hn-03 ───────────────────────────────────────────────┐",
            "│ Thanh Nhan (hn-03) province Hà Nội · district 005                            │",
            "│ Today        0 doses, 0% of 1,000 a day                                      │",
            "│ Since start  0   all time 10,000                                             │",
            "│ Rate         0.0/min over the last minute                                    │",
            "│ Last dose    none since the server started  SILENT                           │",
            "│ Errors       0 in the last minute, 0 since start                             │",
            "│ Stock        0 doses · 0/day · - days  OUT                                   │",
        ],
    );
}

#[test]
fn help_overlays_the_view_and_any_key_closes_it() {
    let mut app = app_with(campaign(), Theme::colour());
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Char('?'));
    assert_screen(
        &draw(&app, 80, 24),
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3                 ● live 08:00:00 UTC ",
            "┌ Alerts · 3 ──────────────────────────────────────────────────────────────────┐",
            "│  Sev  Kind            What                                                   │",
            "│> CRIT out of stock    hn-03 (Thanh Nhan): no doses left in stock             │",
            "│  WARN low ┌ Keys ────────────────────────────────────────────────┐doses)     │",
            "│  WARN site│ Tab, Shift-Tab, 1-4  switch view                     │ started   │",
            "│           │ ↑ ↓, j k, PgUp PgDn  move the selection              │           │",
            "│           │ Enter                open the area, site or alert    │           │",
            "│           │ Esc                  clear the filter, go up, close  │           │",
            "│           │ /                    filter rows (Enter keeps it)    │           │",
            "│           │ s                    sort by the next column         │           │",
            "│           │ a                    plan a shipment (Stock view)    │           │",
            "│           │   Tab, ← →           next field; change the level    │           │",
            "│           │   Enter, Esc         ask for a proposal; cancel      │           │",
            "│           │ ?                    this help (any key closes)      │           │",
            "│           │ q, Ctrl-C            quit                            │           │",
            "│           │                                                      │           │",
            "│           │ Sites under 3 days of supply are marked LOW.         │           │",
            "│           └──────────────────────────────────────────────────────┘           │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
    key(&mut app, KeyCode::Char('x'));
    assert!(!app.show_help);
    assert!(!app.quit);
    key(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
}

#[test]
fn empty_campaign_in_every_view() {
    let mut app = app_with(empty(), Theme::colour());
    assert_screen(
        &draw(&app, 80, 24),
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts                   ● live 08:00:00 UTC ",
            "┌ Doses ───────────────────────────────────────────────────────────────────────┐",
            "│ now 0.0/s   last min 0.0/s   today (since 07:59) 0   all time 0              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│ last 10 min, 8 s a bar, peak 0.0/s                                           │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ Campaign ────────────────────────────┐┌ Server ──────────────────────────────┐",
            "│ Certificates  partial  0             ││ Latency   p50 0.00 ms  p99 0.00 ms   │",
            "│               complete 0             ││           p99.9 0.00 ms  of 0        │",
            "│ Registered    0                      ││ Queues    0 waiting in 4 shards      │",
            "│               +0 since start         ││           fullest 0 of 1024 (0%)     │",
            "│ Check-ins     0 since start          ││ Errors    0 since start              │",
            "│ Stock         0 doses                ││           0 in the last minute       │",
            "│               - days of supply       ││                                      │",
            "│ Alerts        0 (0 critical)         ││                                      │",
            "│                                      ││                                      │",
            "│                                      ││                                      │",
            "│                                      ││                                      │",
            "│                                      ││                                      │",
            "│                                      ││                                      │",
            "└──────────────────────────────────────┘└──────────────────────────────────────┘",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
    key(&mut app, KeyCode::Tab);
    assert_screen(
        &draw(&app, 80, 24),
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts                   ● live 08:00:00 UTC ",
            "┌ Nation · by name ────────────────────────────────────────────────────────────┐",
            "│ No sites in this campaign yet.                                               │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
    key(&mut app, KeyCode::Enter);
    assert!(app.path.is_empty(), "nothing to open");
    key(&mut app, KeyCode::Tab);
    assert_screen(
        &draw(&app, 80, 24),
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts                   ● live 08:00:00 UTC ",
            "┌ Stock · Nation · under 3 days highlighted ───────────────────────────────────┐",
            "│ No lots allocated yet.                                                       │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ By site · by days of supply ─────────────────────────────────────────────────┐",
            "│ No stock to show.                                                            │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ Shipment allocation ─────────────────────────────────────────────────────────┐",
            "│ Press a to propose how to split a shipment of one product.                   │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
    key(&mut app, KeyCode::Tab);
    assert_screen(
        &draw(&app, 80, 24),
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts                   ● live 08:00:00 UTC ",
            "┌ Alerts · 0 ──────────────────────────────────────────────────────────────────┐",
            "│ No alerts.                                                                   │",
            "│ Every site is sending, stock is above 3 days, queues and errors are normal.  │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
}

#[test]
fn server_unreachable_before_any_data() {
    let mut app = App::new("http://127.0.0.1:8080", Theme::colour(), NOW);
    assert_lines(
        &draw(&app, 80, 24),
        0,
        &[" vaxcamp   Overview  Areas  Stock  Alerts                          ○ connecting "],
    );
    app.update(Event::Feed(FeedEvent::Lost {
        error: "connection refused".into(),
        failures: 3,
        retry_at: NOW + 2,
    }));
    let screen = draw(&app, 80, 24);
    assert_screen(
        &screen,
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts               ✕ offline, retry in 2 s ",
            " Offline: connection refused. Retry in 2 s.                                     ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                Cannot reach the server at http://127.0.0.1:8080                ",
            "                               connection refused                               ",
            "              Retrying in 2 s (3 failed attempts). Press q to quit.             ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            "                                                                                ",
            " Tab view  ↑↓ move  Enter open  Esc back  / filter  s sort  ? help  q quit      ",
        ],
    );
    assert_eq!(screen[(70, 0)].fg, Color::Red);
}

#[test]
fn server_gone_keeps_the_last_figures_and_says_how_old() {
    let mut app = app_with(campaign(), Theme::colour());
    app.update(Event::Tick { now: NOW + 42 });
    app.update(Event::Feed(FeedEvent::Lost {
        error: "connection refused".into(),
        failures: 2,
        retry_at: NOW + 43,
    }));
    assert_lines(
        &draw(&app, 80, 24),
        0,
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3             ✕ offline, retry in 1 s ",
            " Offline: connection refused. Retry in 1 s. Data from 08:00:00 UTC, 42 s old.   ",
            "┌ Doses ───────────────────────────────────────────────────────────────────────┐",
            "│ now 1.8/s   last min 1.6/s   today 4,000   all time 1,234,567                │",
        ],
    );
    // Reconnecting, then data again: the banner goes away.
    app.update(Event::Feed(FeedEvent::Connecting { attempt: 3 }));
    assert_lines(
        &draw(&app, 80, 24),
        0,
        &[" vaxcamp   Overview  Areas  Stock  Alerts 3                      ○ reconnecting "],
    );
    let mut fresh = campaign();
    fresh.generated_at = NOW + 45;
    app.update(Event::Feed(FeedEvent::Snapshot(Box::new(fresh))));
    assert_lines(
        &draw(&app, 80, 24),
        0,
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3                 ● live 08:00:45 UTC ",
            "┌ Doses ───────────────────────────────────────────────────────────────────────┐",
        ],
    );
}

#[test]
fn scales_up_to_a_wall_screen() {
    let app = app_with(vaxcamp_console::sample::campaign(500, NOW), Theme::colour());
    let screen = draw(&app, 160, 50);
    let text = lines(&screen);
    // The chart takes a third of the height, and the busiest provinces join the overview.
    assert!(text[1].starts_with("┌ Doses "), "{}", text[1]);
    assert!(text[16].starts_with("└"), "{}", text[16]);
    let provinces = text
        .iter()
        .position(|l| l.starts_with("┌ Provinces · busiest first"))
        .unwrap();
    // Province 10, the busiest, has a name in the sample.
    assert!(
        text[provinces + 2].starts_with("│Lào Cai "),
        "{}",
        text[provinces + 2]
    );
    // Ten provinces of fifty sites each, all shown: six by name, four by code.
    let rows = &text[provinces + 2..provinces + 12];
    assert!(rows.iter().all(|l| !l.starts_with("│ ")), "{rows:#?}");
    assert!(
        text[provinces + 12].trim_matches(['│', ' ']).is_empty(),
        "{}",
        text[provinces + 12]
    );
    let by_code: Vec<&str> = rows
        .iter()
        .filter_map(|l| l.strip_prefix("│Province "))
        .map(|l| &l[..2])
        .collect();
    assert_eq!(by_code.len(), 4, "{rows:#?}");
    assert!(
        by_code
            .iter()
            .all(|code| ["03", "05", "07", "09"].contains(code))
    );
}

#[test]
fn keys_move_and_clamp_the_selection() {
    let mut app = app_with(vaxcamp_console::sample::campaign(500, NOW), Theme::colour());
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Down);
    assert_eq!(app.selected[1], 2);
    key(&mut app, KeyCode::PageDown);
    assert_eq!(app.selected[1], 9, "clamped to the ten provinces");
    key(&mut app, KeyCode::Char('k'));
    assert_eq!(app.selected[1], 8);
    key(&mut app, KeyCode::Home);
    assert_eq!(app.selected[1], 0);
    // Into Hà Nội (first by name is Bắc Kạn) and its first district, Ba Đình: the smaller
    // sample below has only that district's sites.
    key(&mut app, KeyCode::Char('/'));
    for c in "ha noi".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.path, ["01", "001"]);
    assert_eq!(app.area_rows().len(), 5, "five sites in a district");
    // A narrower snapshot keeps the selection inside the table.
    key(&mut app, KeyCode::End);
    assert_eq!(app.selected[1], 4);
    app.update(Event::Feed(FeedEvent::Snapshot(Box::new(
        vaxcamp_console::sample::campaign(3, NOW),
    ))));
    assert_eq!(app.selected[1], 2);
    app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    )));
    assert!(app.quit);
}

// ---- Shipment allocation (issue 7) ----

fn shipment_answer() -> AllocationAnswer {
    let line =
        |area: &str, name: &str, rate: f64, stock: u64, need: u64, allocated: u64| PlanLine {
            area: area.into(),
            name: name.into(),
            site_count: 1,
            daily_rate: rate,
            stock_on_hand: stock,
            need_doses: need,
            allocated_doses: allocated,
            days_of_supply_before: (rate > 0.0).then(|| stock as f64 / rate),
            days_of_supply_after: (rate > 0.0).then(|| (stock + allocated) as f64 / rate),
            ..PlanLine::default()
        };
    AllocationAnswer {
        analytics_backend: "embedded".into(),
        generated_at: NOW + 5,
        plan: Plan {
            request: PlanRequest {
                product: "COMIRNATY".into(),
                shipment_doses: 5_000,
                unit_doses: 10,
                window_days: 7,
                horizon_days: 14,
                level: Level::District,
            },
            lines: vec![
                line("01/001", "001", 3_000.0, 40_000, 2_000, 2_000),
                line("01/005", "005", 500.0, 0, 7_000, 3_000),
                line("01/009", "009", 0.0, 500, 0, 0),
            ],
            need_doses: 9_000,
            allocated_doses: 5_000,
            held_back_doses: 0,
            unmet_need_doses: 4_000,
            fill_level_days: Some(6.0),
            unplaced_registrations: 120,
            notes: vec![
                "the shipment is 4000 doses short of the need: every line with a need was filled to about 6.0 of 14 days of planned use, lowest cover first".into(),
                "120 registrations in 48/490 have no site for this product".into(),
            ],
        },
    }
}

/// The stock view with the shipment typed: COMIRNATY (from the selected row), 5,000 doses, by
/// district.
fn typed_shipment(theme: Theme) -> App {
    let mut app = app_with(campaign(), theme);
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Char('a'));
    for c in "5,000".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Right);
    app
}

/// The stock view, top: unchanged by the allocation panel below it.
const STOCK_TOP: [&str; 5] = [
    " vaxcamp   Overview  Areas  Stock  Alerts 3                 ● live 08:00:00 UTC ",
    "┌ Stock · Nation · under 3 days highlighted ───────────────────────────────────┐",
    "│ COMIRNATY         130,000 doses     26,000/day    5.0 days                   │",
    "│ SPIKEVAX          308,000 doses     54,000/day    5.7 days                   │",
    "└──────────────────────────────────────────────────────────────────────────────┘",
];

fn stock_screen(rest: &[&'static str]) -> Vec<&'static str> {
    STOCK_TOP
        .iter()
        .copied()
        .chain(rest.iter().copied())
        .collect()
}

#[test]
fn allocation_form_sends_one_request_and_waits_for_it() {
    let mut app = typed_shipment(Theme::colour());
    // The product comes from the selected row; the quantity is typed with a separator.
    let screen = draw(&app, 80, 24);
    assert_lines(
        &screen,
        19,
        &[
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ Shipment allocation ─────────────────────────────────────────────────────────┐",
            "│ Product COMIRNATY       Doses 5,000       Level ‹ district ›                 │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            " Shipment: Tab next field · ←→ level · Enter propose · Esc cancel               ",
        ],
    );
    assert_eq!(screen[(50, 21)].bg, Color::Blue, "the field being typed");
    assert_eq!(
        app.take_allocation_request(),
        None,
        "nothing sent while typing"
    );

    key(&mut app, KeyCode::Enter);
    let query = AllocationQuery {
        product: "COMIRNATY".into(),
        quantity: 5_000,
        level: Level::District,
    };
    assert_eq!(app.take_allocation_request(), Some((1, query)));
    assert_eq!(app.take_allocation_request(), None, "handed over once");
    let mut loading = stock_screen(&[
        "┌ Shipment allocation · COMIRNATY, 5,000 doses, by district ───────────────────┐",
        "│ Asking the server how to split 5,000 doses of COMIRNATY by district…         │",
    ]);
    loading.extend(
        ["│                                                                              │"; 15],
    );
    loading.extend([
        "└──────────────────────────────────────────────────────────────────────────────┘",
        " Tab view  ↑↓ move  a shipment  Esc close  / filter  ? help  q quit             ",
    ]);
    assert_screen(&draw(&app, 80, 24), &loading);

    // Esc closes the panel; an answer arriving afterwards is dropped.
    key(&mut app, KeyCode::Esc);
    app.update(Event::Allocation {
        id: 1,
        answer: Ok(Box::new(shipment_answer())),
    });
    assert!(!app.proposal_open());
    assert_lines(
        &draw(&app, 80, 24),
        20,
        &[
            "┌ Shipment allocation ─────────────────────────────────────────────────────────┐",
            "│ Press a to propose how to split a shipment of one product.                   │",
        ],
    );
}

#[test]
fn allocation_form_checks_what_is_typed() {
    let mut app = app_with(campaign(), Theme::colour());
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Char('a'));
    key(&mut app, KeyCode::Enter);
    assert_lines(
        &draw(&app, 80, 24),
        23,
        &[" Shipment: type the number of doses in the shipment   Esc cancel                "],
    );
    key(&mut app, KeyCode::BackTab);
    for _ in 0.."COMIRNATY".len() {
        key(&mut app, KeyCode::Backspace);
    }
    for c in "vaxzevria".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('x'));
    key(&mut app, KeyCode::Char('7'));
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('p'));
    assert_lines(
        &draw(&app, 80, 24),
        21,
        &["│ Product VAXZEVRIA       Doses 7           Level ‹ province ›                 │"],
    );
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.shipment, None, "Esc cancels");
    assert_eq!(app.take_allocation_request(), None);
    assert!(!app.quit);
}

#[test]
fn allocation_proposal_shows_lines_totals_and_notes() {
    let mut app = typed_shipment(Theme::colour());
    key(&mut app, KeyCode::Enter);
    let (id, _) = app.take_allocation_request().unwrap();
    app.update(Event::Allocation {
        id,
        answer: Ok(Box::new(shipment_answer())),
    });
    let mut proposal = stock_screen(&[
        "┌ Shipment allocation · COMIRNATY, 5,000 doses, by district · 08:00:05 UTC ────┐",
        "│ Need 9,000  allocated 5,000 of 5,000  held back 0  unmet need 4,000          │",
        "│  District                      Allocated      Need     Stock Days now → after│",
        "│> Ba Đình                           2,000     2,000    40,000          13 → 14│",
        "│  01/005                            3,000     7,000         0        0.0 → 6.0│",
        "│  01/009                                0         0       500            - → -│",
    ]);
    proposal.extend(
        ["│                                                                              │"; 8],
    );
    proposal.extend([
        "│ • the shipment is 4000 doses short of the need: every line with a need was   │",
        "│   filled to about 6.0 of 14 days of planned use, lowest cover first          │",
        "│ • 120 registrations in 48/490 have no site for this product                  │",
        "└──────────────────────────────────────────────────────────────────────────────┘",
        " Tab view  ↑↓ move  a shipment  Esc close  / filter  ? help  q quit             ",
    ]);
    let screen = draw(&app, 80, 24);
    assert_screen(&screen, &proposal);
    assert_eq!(screen[(64, 6)].fg, Color::Yellow, "unmet need");

    // The selection keys move through the proposal's lines, and the filter narrows them.
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Char('G'));
    assert_eq!(app.proposal_selected, 2);
    key(&mut app, KeyCode::Char('/'));
    key(&mut app, KeyCode::Char('5'));
    key(&mut app, KeyCode::Enter);
    assert_lines(
        &draw(&app, 80, 24),
        5,
        &[
            "┌ Shipment allocation · COMIRNATY, 5,000 doses, by district · 08:00:05 UTC · fi┐",
            "│ Need 9,000  allocated 5,000 of 5,000  held back 0  unmet need 4,000          │",
            "│  District                      Allocated      Need     Stock Days now → after│",
            "│> 01/005                            3,000     7,000         0        0.0 → 6.0│",
            "│                                                                              │",
        ],
    );
    // `a` again: the form over the proposal, filled with the last shipment.
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('a'));
    assert_lines(
        &draw(&app, 80, 24),
        6,
        &[
            "│ Product COMIRNATY       Doses 5,000_      Level ‹ district ›                 │",
            "│ Need 9,000  allocated 5,000 of 5,000  held back 0  unmet need 4,000          │",
        ],
    );
    key(&mut app, KeyCode::Esc);
    // Esc closes the proposal; the by-site table is back.
    key(&mut app, KeyCode::Esc);
    assert!(!app.proposal_open());
    assert_lines(
        &draw(&app, 80, 24),
        5,
        &["┌ By site · by days of supply ─────────────────────────────────────────────────┐"],
    );
}

#[test]
fn allocation_proposal_on_a_wall_screen_and_without_colour() {
    let mut app = typed_shipment(Theme::monochrome());
    key(&mut app, KeyCode::Enter);
    let (id, _) = app.take_allocation_request().unwrap();
    app.update(Event::Allocation {
        id,
        answer: Ok(Box::new(shipment_answer())),
    });
    for (width, height) in [(80, 24), (160, 50)] {
        let screen = draw(&app, width, height);
        assert!(
            screen
                .content()
                .iter()
                .all(|c| (c.fg, c.bg) == (Color::Reset, Color::Reset)),
            "no colour at {width}×{height}"
        );
    }
    let screen = draw(&app, 160, 50);
    let text = lines(&screen);
    assert!(text[7].starts_with("│  District "), "{}", text[7]);
    assert!(text[8].starts_with("│> Ba Đình "), "{}", text[8]);
    assert!(
        text[8].ends_with("2,000     2,000    40,000          13 → 14│"),
        "{}",
        text[8]
    );
    assert!(
        screen[(3, 8)].modifier.contains(Modifier::REVERSED),
        "the selection"
    );
    assert!(
        text[47].starts_with("│ • 120 registrations in 48/490"),
        "{}",
        text[47]
    );
}

#[test]
fn allocation_error_is_shown_as_the_servers_message() {
    let mut app = typed_shipment(Theme::colour());
    key(&mut app, KeyCode::Enter);
    let (first, _) = app.take_allocation_request().unwrap();
    // A second shipment replaces the first before it is answered.
    key(&mut app, KeyCode::Char('a'));
    key(&mut app, KeyCode::Enter);
    let (second, _) = app.take_allocation_request().unwrap();
    assert_ne!(first, second);
    app.update(Event::Allocation {
        id: second,
        answer: Err(
            "no product COMIRNATY in the catalogue; GET /v1/stats lists the lots and products"
                .into(),
        ),
    });
    // The answer to the replaced request does not overwrite the newer one.
    app.update(Event::Allocation {
        id: first,
        answer: Ok(Box::new(shipment_answer())),
    });
    let mut failed = stock_screen(&[
        "┌ Shipment allocation · COMIRNATY, 5,000 doses, by district ───────────────────┐",
        "│ No proposal: no product COMIRNATY in the catalogue; GET /v1/stats lists the  │",
        "│ lots and products                                                            │",
        "│ a changes the shipment · Esc closes this panel                               │",
    ]);
    failed.extend(
        ["│                                                                              │"; 13],
    );
    failed.extend([
        "└──────────────────────────────────────────────────────────────────────────────┘",
        " Tab view  ↑↓ move  a shipment  Esc close  / filter  ? help  q quit             ",
    ]);
    let screen = draw(&app, 80, 24);
    assert_screen(&screen, &failed);
    assert_eq!(screen[(5, 6)].fg, Color::Red);
}

/// The campaign, from a server whose analytics backend has been refusing rows for a while.
fn lagging() -> Snapshot {
    let mut s = campaign();
    s.analytics = Some(Analytics {
        backend: "clickhouse".into(),
        outbox_rows: 48_210,
        outbox_bytes: 9 << 20,
        outbox_max_bytes: 1 << 28,
        lag_ms: 754_000,
        dropped_rows: 1_200,
        last_error: Some("connection refused (os error 111)".into()),
        lag_alert_s: 60,
    });
    s.alerts.insert(0, Alert {
        severity: "critical".into(),
        kind: "analytics_rows_dropped".into(),
        site_id: None,
        shard: None,
        message: "1200 dose rows were dropped because the analytics outbox was full: analytics undercount until they are shipped again from the store".into(),
    });
    s.alerts.insert(1, Alert {
        severity: "warning".into(),
        kind: "analytics_lagging".into(),
        site_id: None,
        shard: None,
        message: "analytics 754 s behind, 48210 rows waiting (4% of the outbox): connection refused (os error 111)".into(),
    });
    s
}

#[test]
fn overview_shows_the_analytics_lag() {
    let mut healthy = campaign();
    healthy.analytics = Some(Analytics {
        backend: "embedded".into(),
        lag_ms: 420,
        outbox_max_bytes: 1 << 28,
        lag_alert_s: 60,
        ..Analytics::default()
    });
    let screen = draw(&app_with(healthy, Theme::colour()), 80, 24);
    assert_lines(
        &screen,
        11,
        &[
            "│ Registered    1,000,000              ││ Queues    3 waiting in 2 shards      │",
            "│               +420 since start       ││           fullest 3 of 1024 (0%)     │",
            "│ Check-ins     4,100 since start      ││ Analytics embedded lag 0.4 s         │",
            "│ Stock         438,000 doses          ││           0 rows waiting             │",
            "│               5.5 days of supply     ││ Errors    12 since start             │",
        ],
    );
    assert_eq!(screen[(66, 13)].fg, Color::Reset, "not lagging");

    let screen = draw(&app_with(lagging(), Theme::colour()), 80, 24);
    assert_lines(
        &screen,
        8,
        &[
            "┌ Campaign ────────────────────────────┐┌ Server ──────────────────────────────┐",
            "│ Certificates  partial  2,600         ││ Latency   p50 2.10 ms  p99 9.80 ms   │",
            "│               complete 1,300         ││ (1 min)   p99.9 24.5 ms  of 3,900    │",
            "│ Registered    1,000,000              ││ Queues    3 waiting in 2 shards      │",
            "│               +420 since start       ││           fullest 3 of 1024 (0%)     │",
            "│ Check-ins     4,100 since start      ││ Analytics clickhouse lag 12 min LATE │",
            "│ Stock         438,000 doses          ││           48,210 rows waiting        │",
            "│               5.5 days of supply     ││           1,200 rows dropped         │",
            "│ Alerts        5 (2 critical)         ││           error: connection refused …│",
            "│                                      ││ Errors    12 since start             │",
            "│                                      ││           2 in the last minute       │",
            "│                                      ││   refused:too_early                 9│",
            "│                                      ││   busy                              3│",
            "│                                      ││                                      │",
            "└──────────────────────────────────────┘└──────────────────────────────────────┘",
        ],
    );
    assert_eq!(screen[(67, 13)].fg, Color::Yellow, "the lag");
    assert_eq!(screen[(52, 15)].fg, Color::Red, "rows dropped");

    // Without colour the state is still written: LATE, dropped.
    let screen = draw(&app_with(lagging(), Theme::monochrome()), 80, 24);
    assert!(screen.content().iter().all(|c| c.fg == Color::Reset));
    assert!(screen[(67, 13)].modifier.contains(Modifier::BOLD));
}

#[test]
fn alerts_view_shows_the_analytics_alerts() {
    let mut app = app_with(lagging(), Theme::colour());
    key(&mut app, KeyCode::Char('4'));
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Alerts · 5 ──────────────────────────────────────────────────────────────────┐",
            "│  Sev  Kind            What                                                   │",
            "│> CRIT analytics rows  1200 dose rows were dropped because the analytics      │",
            "│       dropped         outbox was full: analytics undercount until they are   │",
            "│                       shipped again from the store                           │",
            "│  WARN analytics       analytics 754 s behind, 48210 rows waiting (4% of the  │",
            "│       lagging         outbox): connection refused (os error 111)             │",
            "│  CRIT out of stock    hn-03 (Thanh Nhan): no doses left in stock             │",
        ],
    );
    // These alerts name no site: Enter stays in the alerts view.
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, vaxcamp_console::View::Alerts);
}

// ---- Audit fixes ----

/// Sorting by today re-orders the provinces; a snapshot in which Hà Nội (01) overtakes 79 keeps
/// 79 selected (the highlight follows the area, not the line), and Enter opens it.
#[test]
fn a_snapshot_that_reorders_rows_keeps_the_same_area_selected() {
    let mut app = app_with(campaign(), Theme::colour());
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('s')); // by doses today: 79 (2,500), then 01 (1,500)
    key(&mut app, KeyCode::Home);
    assert_eq!(app.area_rows()[app.selected[1]].key, "79");
    let mut busier = campaign();
    for site in &mut busier.sites {
        if site.province == "01" {
            site.doses_today += 2_000;
        }
    }
    app.update(Event::Feed(FeedEvent::Snapshot(Box::new(busier))));
    assert_lines(
        &draw(&app, 80, 24),
        3,
        &[
            "│  Hà Nội               3     7,500    36.0   167%    138,000   4.6 2 low 1 sil│",
            "│> Province 79          1     2,500    72.0    83%    300,000   6.0            │",
        ],
    );
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.path, ["79"], "Enter opens the area that was selected");

    // The same in the alerts: a new alert above the selected one does not move the selection.
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Down); // low_stock at hn-01
    let mut more = campaign();
    more.alerts.insert(
        0,
        Alert {
            severity: "critical".into(),
            kind: "error_spike".into(),
            site_id: Some("hcm-01".into()),
            shard: None,
            message: "hcm-01 (Cho Ray): 12 dose errors in the last 60 s".into(),
        },
    );
    app.update(Event::Feed(FeedEvent::Snapshot(Box::new(more))));
    assert_eq!(app.selected[3], 2);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.path, ["01", "001", "hn-01"]);
}

/// The campaign with the national alerts a troubled server sends, their figures as given: `n`
/// in every message, which a server changes from one second to the next.
fn national_alerts(n: u64, shards: &[usize], older_server: bool) -> Snapshot {
    let alert = |severity: &str, kind: &str, shard: Option<usize>, message: String| Alert {
        severity: severity.into(),
        kind: kind.into(),
        site_id: None,
        shard: if older_server { None } else { shard },
        message,
    };
    let mut s = campaign();
    let mut national = vec![alert(
        "critical",
        "error_spike",
        None,
        format!("{n} dose errors in the last 60 s ({n}% of attempts): refused:lot_exhausted {n}"),
    )];
    national.extend(shards.iter().map(|&shard| {
        alert(
            "critical",
            "queue_near_full",
            Some(shard),
            format!(
                "shard {shard} queue at {}/1024 (88%): doses will soon be answered 503",
                900 + n
            ),
        )
    }));
    national.push(alert(
        "critical",
        "analytics_rows_dropped",
        None,
        format!("{n} analytics rows were dropped because the outbox was full"),
    ));
    national.push(alert(
        "warning",
        "analytics_rows_set_aside",
        None,
        format!("{n} analytics rows were set aside because the backend cannot hold them"),
    ));
    national.push(alert(
        "warning",
        "analytics_lagging",
        None,
        format!("analytics {n} s behind, {n} rows waiting (4% of the outbox)"),
    ));
    s.alerts.splice(0..0, national);
    s
}

/// The selected alert is the same alert in the next snapshot although its message says new
/// figures: national alerts are told apart by kind (and a queue's by its shard), not by words.
#[test]
fn the_selected_alert_stays_selected_while_its_figures_change() {
    let mut app = app_with(national_alerts(43, &[0, 1], false), Theme::colour());
    key(&mut app, KeyCode::Char('4'));
    let selected = |app: &App| {
        let alert = app.alerts()[app.selected[3]];
        (alert.kind.clone(), alert.shard)
    };
    for (kind, shard) in [
        ("analytics_lagging", None),
        ("analytics_rows_set_aside", None),
        ("analytics_rows_dropped", None),
        ("error_spike", None),
        ("queue_near_full", Some(1)),
    ] {
        let at = app
            .alerts()
            .iter()
            .position(|a| a.kind == kind && a.shard == shard)
            .unwrap();
        key(&mut app, KeyCode::Home);
        for _ in 0..at {
            key(&mut app, KeyCode::Down);
        }
        assert_eq!(selected(&app), (kind.to_owned(), shard));
        // A second later every figure moved and shard 0's queue drained; then it fills again.
        for (n, shards) in [(44, &[1][..]), (45, &[0, 1][..])] {
            app.update(Event::Feed(FeedEvent::Snapshot(Box::new(national_alerts(
                n, shards, false,
            )))));
            assert_eq!(selected(&app), (kind.to_owned(), shard), "{n}");
        }
    }
    // A server older than the `shard` field names it in the message: the queue is still found.
    key(&mut app, KeyCode::Home);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    assert_eq!(selected(&app), ("queue_near_full".to_owned(), Some(1)));
    for n in [46, 47] {
        app.update(Event::Feed(FeedEvent::Snapshot(Box::new(national_alerts(
            n,
            &[0, 1],
            true,
        )))));
        let alert = app.alerts()[app.selected[3]];
        assert!(
            alert.message.starts_with("shard 1 queue at"),
            "{n}: {alert:?}"
        );
    }
}

#[test]
fn frozen_figures_are_marked_stale_and_server_errors_shown() {
    let mut app = app_with(campaign(), Theme::colour());
    // Ticks go on, no new snapshot: after three seconds the figures are not live any more.
    app.update(Event::Tick { now: NOW + 3 });
    assert!(!app.is_stale());
    app.update(Event::Tick { now: NOW + 5 });
    assert!(app.is_stale());
    assert_lines(
        &draw(&app, 80, 24),
        0,
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3                    ◌ stale, 5 s old ",
            " Stale: connected, but no new figures. Data from 08:00:00 UTC, 5 s old.         ",
            "┌ Doses ───────────────────────────────────────────────────────────────────────┐",
        ],
    );
    // The same snapshot sent again (a server whose figures froze) is still stale.
    app.update(Event::Feed(FeedEvent::Snapshot(Box::new(campaign()))));
    assert!(app.is_stale());
    // The server says why.
    app.update(Event::Feed(FeedEvent::ServerError(
        "the snapshot could not be built".into(),
    )));
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[" Server error: the snapshot could not be built. Data from 08:00:00 UTC, 5 s old."],
    );
    // After a reconnection the first snapshot is fresh, even from a server whose clock is
    // behind the last one's (a standby replica).
    let mut behind = campaign();
    behind.generated_at = NOW - 2;
    app.update(Event::Feed(FeedEvent::Connecting { attempt: 1 }));
    app.update(Event::Feed(FeedEvent::Snapshot(Box::new(behind))));
    assert!(!app.is_stale());
    app.update(Event::Tick { now: NOW + 9 });
    assert!(app.is_stale());
    // A fresh snapshot clears both.
    let mut fresh = campaign();
    fresh.generated_at = NOW + 5;
    app.update(Event::Feed(FeedEvent::Snapshot(Box::new(fresh))));
    assert!(!app.is_stale());
    assert_lines(
        &draw(&app, 80, 24),
        0,
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3                 ● live 08:00:05 UTC ",
            "┌ Doses ───────────────────────────────────────────────────────────────────────┐",
        ],
    );
}

/// The campaign's time zone: clocks in it, and "today" from its midnight.
#[test]
fn clocks_are_in_the_campaign_time_zone() {
    let mut s = campaign();
    s.utc_offset_s = 7 * 3_600;
    // 08:00 UTC is 15:00 in Viet Nam; today began at 17:00 UTC the day before.
    s.today_since = NOW - 15 * 3_600;
    let mut app = app_with(s.clone(), Theme::colour());
    assert_lines(
        &draw(&app, 80, 24),
        0,
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3               ● live 15:00:00 UTC+7 ",
            "┌ Doses ───────────────────────────────────────────────────────────────────────┐",
            "│ now 1.8/s   last min 1.6/s   today 4,000   all time 1,234,567                │",
        ],
    );
    // A server that could not learn the day's earlier doses counts from its start.
    s.today_since = NOW - 3_600;
    app.update(Event::Feed(FeedEvent::Snapshot(Box::new(s))));
    assert_lines(
        &draw(&app, 80, 24),
        2,
        &["│ now 1.8/s   last min 1.6/s   today (since 14:00) 4,000   all time 1,234,567  │"],
    );
}

fn nine_products() -> Vec<ProductStock> {
    [
        "COMIRNATY",
        "SPIKEVAX",
        "VAXZEVRIA",
        "COVILO",
        "SPUTNIK-V",
        "JCOVDEN",
        "COVAXIN",
        "ABDALA",
        "HAYAT-VAX",
    ]
    .iter()
    .enumerate()
    .map(|(i, name)| product(name, 10_000 * (i as u64 + 1), 1_000.0))
    .collect()
}

#[test]
fn stock_summary_shows_every_product_that_fits_and_counts_the_rest() {
    // The nine built-in products all fit at 80×24.
    let mut s = campaign();
    s.stock.by_product = nine_products();
    let mut app = app_with(s.clone(), Theme::colour());
    key(&mut app, KeyCode::Char('3'));
    let screen = draw(&app, 80, 24);
    assert_lines(
        &screen,
        1,
        &[
            "┌ Stock · Nation · under 3 days highlighted ───────────────────────────────────┐",
            "│ COMIRNATY          10,000 doses      1,000/day     10 days                   │",
            "│ SPIKEVAX           20,000 doses      1,000/day     20 days                   │",
            "│ VAXZEVRIA          30,000 doses      1,000/day     30 days                   │",
            "│ COVILO             40,000 doses      1,000/day     40 days                   │",
            "│ SPUTNIK-V          50,000 doses      1,000/day     50 days                   │",
            "│ JCOVDEN            60,000 doses      1,000/day     60 days                   │",
            "│ COVAXIN            70,000 doses      1,000/day     70 days                   │",
            "│ ABDALA             80,000 doses      1,000/day     80 days                   │",
            "│ HAYAT-VAX          90,000 doses      1,000/day     90 days                   │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ By site · by days of supply ─────────────────────────────────────────────────┐",
            "│  Site                             Product           Stock     /day  ▲Days    │",
            "│> Bach Mai                         COMIRNATY        40,000   20,000    2.0 LOW│",
        ],
    );
    // Three more than fit: the last line says what is not shown.
    for (i, name) in ["CORBEVAX", "NUVAXOVID", "VIDPREVTYN"].iter().enumerate() {
        s.stock
            .by_product
            .push(product(name, 1_000 * (i as u64 + 1), 1_000.0));
    }
    let mut app = app_with(s, Theme::colour());
    key(&mut app, KeyCode::Char('3'));
    assert_lines(
        &draw(&app, 80, 24),
        9,
        &[
            "│ ABDALA             80,000 doses      1,000/day     80 days                   │",
            "│ +4 more: 96,000 doses of HAYAT-VAX, CORBEVAX, NUVAXOVID, VIDPREVTYN          │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
        ],
    );
}

#[test]
fn error_kinds_that_do_not_fit_are_counted() {
    let mut s = campaign();
    s.errors.by_kind = (0..9)
        .map(|i| ErrorCount {
            kind: format!("refused:rule_number_{i}"),
            count: 10 - i,
        })
        .collect();
    let app = app_with(s, Theme::colour());
    assert_lines(
        &draw(&app, 80, 24),
        14,
        &[
            "│ Stock         438,000 doses          ││           2 in the last minute       │",
            "│               5.5 days of supply     ││   refused:rule_number_0            10│",
            "│ Alerts        3 (1 critical)         ││   refused:rule_number_1             9│",
            "│                                      ││   refused:rule_number_2             8│",
            "│                                      ││   refused:rule_number_3             7│",
            "│                                      ││   refused:rule_number_4             6│",
            "│                                      ││   refused:rule_number_5             5│",
            "│                                      ││   +3 more kinds                     9│",
            "└──────────────────────────────────────┘└──────────────────────────────────────┘",
        ],
    );
}

#[test]
fn esc_in_the_stock_view_goes_up_a_level() {
    let mut app = app_with(campaign(), Theme::colour());
    app.path = vec!["01".into(), "001".into()];
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.path, ["01"]);
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &["┌ Stock · Nation › Hà Nội · under 3 days highlighted ──────────────────────────┐"],
    );
    key(&mut app, KeyCode::Esc);
    assert!(app.path.is_empty());
}

/// Vietnamese names: precomposed, with combining marks (as some keyboards send them), `Đ`,
/// and a wide character. Columns stay aligned, the filter ignores diacritics and the name
/// sort puts `Đ` with the Ds.
fn vietnamese() -> Snapshot {
    let mut s = campaign();
    let names = [
        ("hn-01", "Bệnh viện Bạch Mai"),
        // "Việt Đức" typed with combining marks: e + U+0323 U+0302, u + U+031B U+0301.
        ("hn-02", "Vie\u{323}\u{302}t Đu\u{31b}\u{301}c"),
        ("hn-03", "Trạm y tế 東 Đống Đa"),
    ];
    for site in &mut s.sites {
        if let Some((_, name)) = names.iter().find(|(id, _)| *id == site.site_id) {
            site.name = (*name).into();
        }
    }
    s
}

#[test]
fn vietnamese_names_align_filter_and_sort() {
    let mut app = app_with(vietnamese(), Theme::colour());
    app.path = vec!["01".into(), "001".into()];
    key(&mut app, KeyCode::Char('2'));
    let screen = draw(&app, 80, 24);
    assert_lines(
        &screen,
        1,
        &[
            "┌ Nation › Hà Nội › Ba Đình · by name ─────────────────────────────────────────┐",
            "│  Site▼              Err     Today    /min  Share      Stock  Days Flags      │",
            // The name column is cut by display width, never in the middle of a letter.
            "│> Bệnh viện Bạch M     2     1,200    30.0    60%     48,000   2.0 LOW        │",
            "│  Vie\u{323}\u{302}t Đu\u{31b}\u{301}c             0       300     6.0    20%     90,000    15            │",
        ],
    );
    // Every line is 80 columns wide: nothing pushed the border out.
    for line in lines(&screen) {
        assert_eq!(vaxcamp_console::format::width(&line), 80, "{line}");
    }
    // Without accents, in any case.
    key(&mut app, KeyCode::Char('/'));
    for c in "viet duc".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let rows = app.area_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key, "hn-02");
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('/'));
    for c in "BACH MAI".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    assert_eq!(app.area_rows()[0].key, "hn-01");
    key(&mut app, KeyCode::Esc);

    // The stock view, by site name: "Bệnh..." < "Trạm..." < "Việt Đức"; and the wide
    // character keeps the columns in place.
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Char('s'));
    key(&mut app, KeyCode::Char('s'));
    let screen = draw(&app, 80, 24);
    assert_lines(
        &screen,
        5,
        &[
            "┌ By site · by site ───────────────────────────────────────────────────────────┐",
            "│  Site▲                            Product           Stock     /day   Days    │",
            "│> Bệnh viện Bạch Mai               COMIRNATY        40,000   20,000    2.0 LOW│",
            "│  Bệnh viện Bạch Mai               SPIKEVAX          8,000    4,000    2.0 LOW│",
            "│  Cho Ray                          SPIKEVAX        300,000   50,000    6.0    │",
            // 東 takes two cells (the second, a blank here, is its continuation).
            "│  Trạm y tế 東  Đống Đa             COMIRNATY             0        0      - OUT│",
            "│  Vie\u{323}\u{302}t Đu\u{31b}\u{301}c                         COMIRNATY        90,000    6,000     15    │",
        ],
    );
    // Cell by cell: the product column starts in the same cell on every row, and the right
    // border is where it belongs.
    for y in 7..=11 {
        let product = screen[(36, y)].symbol();
        assert!(product == "C" || product == "S", "row {y}: {product:?}");
        assert_eq!(screen[(79, y)].symbol(), "│", "row {y}");
    }
}

#[test]
fn names_sort_without_their_diacritics() {
    let mut s = campaign();
    for (site, name) in s
        .sites
        .iter_mut()
        .zip(["Đà Nẵng", "Zeta", "Ánh Dương", "Cần Thơ"])
    {
        site.name = name.into();
        site.province = "01".into();
        site.district = "001".into();
    }
    let mut app = app_with(s, Theme::colour());
    app.path = vec!["01".into(), "001".into()];
    key(&mut app, KeyCode::Char('2'));
    let names: Vec<String> = app.area_rows().into_iter().map(|r| r.label).collect();
    assert_eq!(names, ["Ánh Dương", "Cần Thơ", "Đà Nẵng", "Zeta"]);
}

// ---- Area names ----

/// Provinces and districts are shown by the names the server has for them, by their codes
/// where it has none: in the table, in the breadcrumb, on a site's page and in the stock view.
#[test]
fn areas_show_names_where_the_server_has_them() {
    let mut app = app_with(campaign(), Theme::colour());
    key(&mut app, KeyCode::Char('2'));
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation · by name ────────────────────────────────────────────────────────────┐",
            "│  Province▼        Sites     Today    /min  Share      Stock  Days Flags      │",
            "│> Hà Nội               3     1,500    36.0    33%    138,000   4.6 2 low 1 sil│",
            "│  Province 79          1     2,500    72.0    83%    300,000   6.0            │",
        ],
    );
    // Enter descends by code, whatever the row is called.
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.path, ["01"]);
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation › Hà Nội · by name ───────────────────────────────────────────────────┐",
            "│  District▼        Sites     Today    /min  Share      Stock  Days Flags      │",
            "│> Ba Đình              2     1,500    36.0    43%    138,000   4.6 1 low      │",
            "│  District 005         1         0     0.0     0%          0     - 1 low 1 sil│",
        ],
    );
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.path, ["01", "001", "hn-01"]);
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation › Hà Nội › Ba Đình › hn-01 ───────────────────────────────────────────┐",
            "│ Bach Mai (hn-01) province Hà Nội · district Ba Đình                          │",
        ],
    );
    key(&mut app, KeyCode::Char('3'));
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &["┌ Stock · Nation › Hà Nội › Ba Đình › hn-01 · under 3 days highlighted ────────┐"],
    );
    // Province 79 has no name: its code, at every level.
    app.path = vec!["79".into(), "760".into()];
    key(&mut app, KeyCode::Char('2'));
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &["┌ Nation › 79 › 760 · by name ─────────────────────────────────────────────────┐"],
    );
}

/// `/` finds an area by its name typed without accents, in any case, or by its code; an
/// unnamed area by its code or its "Province 79" label.
#[test]
fn the_filter_finds_an_area_by_its_name_or_its_code() {
    let mut app = app_with(campaign(), Theme::colour());
    key(&mut app, KeyCode::Char('2'));
    let filtered = |app: &mut App, text: &str| -> Vec<String> {
        key(app, KeyCode::Char('/'));
        for c in text.chars() {
            key(app, KeyCode::Char(c));
        }
        key(app, KeyCode::Enter);
        let keys = app.area_rows().into_iter().map(|r| r.key).collect();
        key(app, KeyCode::Esc);
        keys
    };
    assert_eq!(filtered(&mut app, "ha noi"), ["01"]);
    assert_eq!(filtered(&mut app, "HÀ NỘI"), ["01"]);
    assert_eq!(filtered(&mut app, "noi"), ["01"]);
    assert_eq!(filtered(&mut app, "01"), ["01"], "by its code");
    assert_eq!(filtered(&mut app, "79"), ["79"]);
    assert_eq!(filtered(&mut app, "province 7"), ["79"]);
    assert_eq!(filtered(&mut app, "hanoi"), Vec::<String>::new());
    key(&mut app, KeyCode::Char('/'));
    for c in "ha noi".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation · by name · filter \"ha noi\" ──────────────────────────────────────────┐",
            "│  Province▼        Sites     Today    /min  Share      Stock  Days Flags      │",
            "│> Hà Nội               3     1,500    36.0    33%    138,000   4.6 2 low 1 sil│",
            "│                                                                              │",
        ],
    );
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.path, ["01"]);
    // Districts: by name, or by code (the code alone, not the province's).
    assert_eq!(filtered(&mut app, "ba dinh"), ["001"]);
    assert_eq!(filtered(&mut app, "Đình"), ["001"]);
    assert_eq!(filtered(&mut app, "001"), ["001"]);
    assert_eq!(filtered(&mut app, "005"), ["005"]);
    assert_eq!(
        filtered(&mut app, "district"),
        ["005"],
        "the unnamed one's label"
    );
}

/// The name sort compares names without their diacritics, so "Đà Nẵng" sorts with the Ds and
/// an unnamed "Province 79" with the Ps.
#[test]
fn area_names_sort_without_their_diacritics() {
    let mut s = campaign();
    s.sites[0].province = "92".into(); // Cho Ray, moved to Cần Thơ
    let mut danang = s.sites[0].clone();
    danang.site_id = "dn-01".into();
    danang.province = "48".into();
    let mut unnamed = s.sites[0].clone();
    unnamed.site_id = "x-01".into();
    unnamed.province = "79".into();
    s.sites.extend([danang, unnamed]);
    s.area_names.extend([
        ("92".to_owned(), "Cần Thơ".to_owned()),
        ("48".to_owned(), "Đà Nẵng".to_owned()),
        ("96".to_owned(), "Cà Mau".to_owned()), // no site there: no row
    ]);
    let mut app = app_with(s, Theme::colour());
    key(&mut app, KeyCode::Char('2'));
    let labels: Vec<String> = app.area_rows().into_iter().map(|r| r.label).collect();
    assert_eq!(labels, ["Cần Thơ", "Đà Nẵng", "Hà Nội", "Province 79"]);
}

/// A snapshot from a server without names (older, or none imported) has no `area_names` at
/// all: it parses, and every area is shown by its code as before.
#[test]
fn a_snapshot_without_area_names_shows_codes() {
    let mut json = serde_json::to_value(campaign()).unwrap();
    assert!(json.as_object_mut().unwrap().remove("area_names").is_some());
    let snapshot: Snapshot = serde_json::from_value(json).unwrap();
    assert!(snapshot.area_names.is_empty());
    let mut app = app_with(snapshot, Theme::colour());
    key(&mut app, KeyCode::Char('2'));
    assert_lines(
        &draw(&app, 80, 24),
        3,
        &[
            "│> Province 01          3     1,500    36.0    33%    138,000   4.6 2 low 1 sil│",
            "│  Province 79          1     2,500    72.0    83%    300,000   6.0            │",
        ],
    );
    key(&mut app, KeyCode::Enter);
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation › 01 · by name ───────────────────────────────────────────────────────┐",
            "│  District▼        Sites     Today    /min  Share      Stock  Days Flags      │",
            "│> District 001         2     1,500    36.0    43%    138,000   4.6 1 low      │",
            "│  District 005         1         0     0.0     0%          0     - 1 low 1 sil│",
        ],
    );
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation › 01 › 001 › hn-01 ───────────────────────────────────────────────────┐",
            "│ Bach Mai (hn-01) province 01 · district 001                                  │",
        ],
    );
}

/// The proposal names districts (and provinces) as the snapshot does, and its filter finds
/// them by name; an unnamed district keeps the planner's id.
#[test]
fn allocation_proposal_names_areas_and_filters_by_name() {
    let mut app = typed_shipment(Theme::colour());
    key(&mut app, KeyCode::Enter);
    let (id, _) = app.take_allocation_request().unwrap();
    app.update(Event::Allocation {
        id,
        answer: Ok(Box::new(shipment_answer())),
    });
    assert_lines(
        &draw(&app, 80, 24),
        7,
        &[
            "│  District                      Allocated      Need     Stock Days now → after│",
            "│> Ba Đình                           2,000     2,000    40,000          13 → 14│",
            "│  01/005                            3,000     7,000         0        0.0 → 6.0│",
            "│  01/009                                0         0       500            - → -│",
        ],
    );
    key(&mut app, KeyCode::Char('/'));
    for c in "ba dinh".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let areas: Vec<&str> = app
        .proposal_lines()
        .iter()
        .map(|l| l.area.as_str())
        .collect();
    assert_eq!(areas, ["01/001"]);

    // By province: the province's name.
    let mut by_province = shipment_answer();
    by_province.plan.request.level = Level::Province;
    by_province.plan.lines = vec![
        PlanLine {
            area: "01".into(),
            name: "01".into(),
            allocated_doses: 4_000,
            ..PlanLine::default()
        },
        PlanLine {
            area: "79".into(),
            name: "79".into(),
            allocated_doses: 1_000,
            ..PlanLine::default()
        },
    ];
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('a'));
    key(&mut app, KeyCode::Enter);
    let (id, _) = app.take_allocation_request().unwrap();
    app.update(Event::Allocation {
        id,
        answer: Ok(Box::new(by_province)),
    });
    let screen = lines(&draw(&app, 80, 24));
    assert!(screen[7].starts_with("│  Province "), "{}", screen[7]);
    assert!(screen[8].starts_with("│> Hà Nội "), "{}", screen[8]);
    assert!(screen[9].starts_with("│  79 "), "{}", screen[9]);
}

/// Names are whatever the server was given: long ones are cut to their column or, in a title,
/// to 20 columns with `…`; line breaks and tabs become spaces; a blank name counts as none.
/// Nothing is pushed past the border.
#[test]
fn long_and_odd_area_names_keep_the_columns() {
    let mut s = campaign();
    s.area_names.extend([
        ("79".to_owned(), "Thành phố Hồ Chí Minh".to_owned()),
        (
            "79/760".to_owned(),
            "Quận 1\n(trung tâm,\tgồm phường Bến Nghé 東京)".to_owned(),
        ),
        ("01/005".to_owned(), " \n\t ".to_owned()),
    ]);
    let mut app = app_with(s, Theme::colour());
    key(&mut app, KeyCode::Char('2'));
    let screen = draw(&app, 80, 24);
    assert_lines(
        &screen,
        3,
        &[
            "│> Hà Nội               3     1,500    36.0    33%    138,000   4.6 2 low 1 sil│",
            "│  Thành phố Hồ Chí     1     2,500    72.0    83%    300,000   6.0            │",
        ],
    );
    app.path = vec!["79".into()];
    let screen = draw(&app, 80, 24);
    assert_lines(
        &screen,
        1,
        &[
            "┌ Nation › Thành phố Hồ Chí Mi… · by name ─────────────────────────────────────┐",
            "│  District▼        Sites     Today    /min  Share      Stock  Days Flags      │",
            "│> Quận 1 (trung tâ     1     2,500    72.0    83%    300,000   6.0            │",
        ],
    );
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.path, ["79", "760", "hcm-01"]);
    let screen = draw(&app, 80, 24);
    assert_lines(
        &screen,
        1,
        &[
            "┌ Nation › Thành phố Hồ Chí Mi… › Quận 1 (trung tâm, … › hcm-01 ───────────────┐",
            "│ Cho Ray (hcm-01) province Thành phố Hồ Chí Mi… · district Quận 1 (trung tâm, │",
        ],
    );
    for line in lines(&screen) {
        assert_eq!(vaxcamp_console::format::width(&line), 80, "{line}");
    }
    // The blank name of district 005: its code.
    app.path = vec!["01".into()];
    assert_lines(
        &draw(&app, 80, 24),
        4,
        &["│  District 005         1         0     0.0     0%          0     - 1 low 1 sil│"],
    );
    // Every view, every size: nothing past the border.
    for view in ['1', '2', '3', '4'] {
        key(&mut app, KeyCode::Char(view));
        for (width, height) in [(80, 24), (40, 12), (160, 50)] {
            for line in lines(&draw(&app, width, height)) {
                assert_eq!(
                    vaxcamp_console::format::width(&line),
                    usize::from(width),
                    "view {view} at {width}×{height}: {line}"
                );
            }
        }
    }
}
