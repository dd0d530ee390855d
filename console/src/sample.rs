//! Made-up campaigns for the rendering tests, the render-cost benchmark and the example: the
//! same JSON shape the server sends, with figures that are easy to check by eye.

use std::collections::BTreeMap;

use crate::feed::{
    Alert, Analytics, Doses, ErrorCount, Errors, Latency, ProductStock, Queues, Registrations,
    SeriesCounts, SiteLive, Snapshot, Stock, Thresholds, district_key,
};

/// 2030-01-02 08:00:00 UTC.
pub const NOW: i64 = 1_893_571_200;

/// Names for some of the sample's areas, by their real codes where those exist: six provinces
/// and nine districts of Hà Nội. Provinces 03, 05, 07, 09 and the other districts stay unnamed,
/// as areas missing from `vaxcamp import areas` do, so the sample shows both.
const AREA_NAMES: [(&str, &str); 15] = [
    ("01", "Hà Nội"),
    ("02", "Hà Giang"),
    ("04", "Cao Bằng"),
    ("06", "Bắc Kạn"),
    ("08", "Tuyên Quang"),
    ("10", "Lào Cai"),
    ("01/001", "Ba Đình"),
    ("01/002", "Hoàn Kiếm"),
    ("01/003", "Tây Hồ"),
    ("01/004", "Long Biên"),
    ("01/005", "Cầu Giấy"),
    ("01/006", "Đống Đa"),
    ("01/007", "Hai Bà Trưng"),
    ("01/008", "Hoàng Mai"),
    ("01/009", "Thanh Xuân"),
];

/// The names of [`AREA_NAMES`] whose areas have sites: the server sends no others.
fn area_names(sites: &[SiteLive]) -> BTreeMap<String, String> {
    AREA_NAMES
        .iter()
        .filter(|(key, _)| {
            sites
                .iter()
                .any(|s| s.province == *key || district_key(&s.province, &s.district) == *key)
        })
        .map(|(key, name)| ((*key).to_owned(), (*name).to_owned()))
        .collect()
}

/// A campaign of `sites` sites over provinces of 10 districts of 5 sites each, busy, with a
/// few sites low on stock and one silent, and names for some of its areas. Deterministic.
pub fn campaign(sites: usize, now: i64) -> Snapshot {
    let products = ["COMIRNATY", "SPIKEVAX"];
    let mut all = Vec::with_capacity(sites);
    for i in 0..sites {
        let province = format!("{:02}", 1 + i / 50);
        let district = format!("{:03}", 1 + i / 5);
        let capacity = 2_000 + 500 * (i as u32 % 5);
        let today = 100 + (i as u64 * 37) % 900;
        let rate = (i % 7) as f64 * 0.05;
        let uptake = 800.0 + (i % 11) as f64 * 120.0;
        let stock: Vec<ProductStock> = products
            .iter()
            .enumerate()
            .map(|(n, product)| {
                let remaining = if i % 23 == 3 && n == 0 {
                    0
                } else {
                    ((i as u64 * 7_919 + n as u64 * 104_729) % 40_000) + 500
                };
                let share = if n == 0 { 0.6 } else { 0.4 };
                ProductStock {
                    product: (*product).to_owned(),
                    remaining,
                    uptake_per_day: Some(uptake * share),
                    days_of_supply: Some(remaining as f64 / (uptake * share)),
                }
            })
            .collect();
        let remaining: u64 = stock.iter().map(|p| p.remaining).sum();
        all.push(SiteLive {
            site_id: format!("s{province}-{i:03}"),
            name: format!("Site {} of district {district}", i % 5 + 1),
            province,
            district,
            commune: None,
            daily_capacity: capacity,
            doses_today: today,
            doses_since_start: today,
            doses_total: today * 20,
            rate_per_s: rate,
            last_dose_at: Some(now - (i as i64 % 30)),
            remaining,
            uptake_per_day: Some(uptake),
            days_of_supply: Some(remaining as f64 / uptake),
            low_stock: remaining as f64 / uptake < 3.0,
            silent: i == 7,
            errors_last_minute: u64::from(i % 11 == 0),
            errors_since_start: (i % 4) as u64,
            stock,
        });
    }
    let today: u64 = all.iter().map(|s| s.doses_today).sum();
    let remaining: u64 = all.iter().map(|s| s.remaining).sum();
    let uptake: f64 = all.iter().filter_map(|s| s.uptake_per_day).sum();
    let by_product = products
        .iter()
        .map(|product| {
            let (left, up) = all
                .iter()
                .flat_map(|s| s.stock.iter())
                .filter(|p| p.product == *product)
                .fold((0u64, 0f64), |(l, u), p| {
                    (l + p.remaining, u + p.uptake_per_day.unwrap_or(0.0))
                });
            ProductStock {
                product: (*product).to_owned(),
                remaining: left,
                uptake_per_day: Some(up),
                days_of_supply: (up > 0.0).then(|| left as f64 / up),
            }
        })
        .collect();
    let mut alerts: Vec<Alert> = all
        .iter()
        .filter(|s| s.remaining == 0 || s.low_stock)
        .map(|s| Alert {
            severity: "warning".into(),
            kind: "low_stock".into(),
            site_id: Some(s.site_id.clone()),
            message: format!("{} ({}): low stock", s.site_id, s.name),
            ..Alert::default()
        })
        .collect();
    alerts.extend(all.iter().filter(|s| s.silent).map(|s| Alert {
        severity: "warning".into(),
        kind: "site_silent".into(),
        site_id: Some(s.site_id.clone()),
        message: format!("{} ({}): no dose for 12 min", s.site_id, s.name),
        ..Alert::default()
    }));
    Snapshot {
        generated_at: now,
        started_at: now - 3_600,
        // Viet Nam's day: midnight at UTC+7.
        today_since: now - (now + 25_200).rem_euclid(86_400),
        utc_offset_s: 25_200,
        backend: "embedded".into(),
        thresholds: Thresholds::default(),
        doses: Doses {
            total: today * 20,
            today,
            since_start: today,
            per_s_now: all.iter().map(|s| s.rate_per_s).sum(),
            per_s_1m: all.iter().map(|s| s.rate_per_s).sum(),
            history_per_s: (0..600u64).map(|s| 40 + (s * 13) % 30).collect(),
            history_end: now,
        },
        certificates: SeriesCounts {
            partial: today * 2 / 3,
            complete: today / 3,
        },
        registrations: Registrations {
            total: 1_000_000,
            since_start: 1_234,
        },
        checkins_since_start: today,
        certificates_signed: today,
        latency_ms: Latency {
            window_s: 60,
            count: today,
            p50_ms: 2.1,
            p99_ms: 9.8,
            p999_ms: 24.5,
            max_ms: 80.0,
        },
        queues: Queues {
            capacity: 1024,
            depths: vec![0, 3, 1, 0],
        },
        errors: Errors {
            total: 12,
            last_minute: 2,
            by_kind: vec![
                ErrorCount {
                    kind: "refused:too_early".into(),
                    count: 9,
                },
                ErrorCount {
                    kind: "busy".into(),
                    count: 3,
                },
            ],
        },
        stock: Stock {
            remaining,
            uptake_per_day: Some(uptake),
            days_of_supply: (uptake > 0.0).then(|| remaining as f64 / uptake),
            by_product,
        },
        area_names: area_names(&all),
        sites: all,
        analytics: Some(Analytics {
            backend: "embedded".into(),
            outbox_rows: 12,
            outbox_bytes: 1_536,
            outbox_max_bytes: 256 << 20,
            lag_ms: 400,
            dropped_rows: 0,
            last_error: None,
            lag_alert_s: 60,
        }),
        alerts,
    }
}
