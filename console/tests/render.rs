//! Rendering tests: the console drawn on ratatui's `TestBackend`, compared line by line with
//! the screen a person would see.

#![allow(clippy::unwrap_used)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use vaxcamp_console::app::{App, Event};
use vaxcamp_console::feed::{
    Alert, Doses, ErrorCount, Errors, FeedEvent, Latency, ProductStock, Queues, Registrations,
    SeriesCounts, SiteLive, Snapshot, Stock, Thresholds,
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
        stock,
    }
}

/// Two provinces, three districts, four sites: one low on stock, one out of stock and silent.
fn campaign() -> Snapshot {
    let sites = vec![
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
    Snapshot {
        generated_at: NOW,
        started_at: NOW - 7_200,
        today_since: NOW - 8 * 3_600,
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
        latency_ms: Latency { count: 3_900, p50_ms: 2.1, p99_ms: 9.8, p999_ms: 24.5, max_ms: 80.0 },
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
        alerts: vec![
            Alert { severity: "critical".into(), kind: "out_of_stock".into(), site_id: Some("hn-03".into()), message: "hn-03 (Thanh Nhan): no doses left in stock".into() },
            Alert { severity: "warning".into(), kind: "low_stock".into(), site_id: Some("hn-01".into()), message: "hn-01 (Bach Mai): 2.0 days of supply (48000 doses)".into() },
            Alert { severity: "warning".into(), kind: "site_silent".into(), site_id: Some("hn-03".into()), message: "hn-03 (Thanh Nhan): no dose since the server started 120 min ago, while other sites are active".into() },
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
            "│               complete 1,300         ││           p99.9 24.5 ms  of 3,900    │",
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
            "│> Province 01          3     1,500    36.0    33%    138,000   4.6 2 low 1 sil│",
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
            "┌ Nation › 01 · by name ───────────────────────────────────────────────────────┐",
            "│  District▼        Sites     Today    /min  Share      Stock  Days Flags      │",
            "│> District 001         2     1,500    36.0    43%    138,000   4.6 1 low      │",
            "│  District 005         1         0     0.0     0%          0     - 1 low 1 sil│",
            "│                                                                              │",
        ],
    );
    key(&mut app, KeyCode::Enter);
    assert_lines(
        &draw(&app, 80, 24),
        1,
        &[
            "┌ Nation › 01 › 001 · by name ─────────────────────────────────────────────────┐",
            "│  Site▼                      Today    /min  Share      Stock  Days Flags      │",
            "│> Bach Mai                   1,200    30.0    60%     48,000   2.0 LOW        │",
            "│  Viet Duc                     300     6.0    20%     90,000    15            │",
            "│                                                                              │",
        ],
    );
    key(&mut app, KeyCode::Enter);
    assert_screen(
        &draw(&app, 80, 24),
        &[
            " vaxcamp   Overview  Areas  Stock  Alerts 3                 ● live 08:00:00 UTC ",
            "┌ Nation › 01 › 001 › hn-01 ───────────────────────────────────────────────────┐",
            "│ Bach Mai (hn-01) province 01 · district 001                                  │",
            "│ Today        1,200 doses, 60% of 2,000 a day                                 │",
            "│ Since start  1,200   all time 11,200                                         │",
            "│ Rate         30.0/min over the last minute                                   │",
            "│ Last dose    07:59:56 UTC (4 s ago)                                          │",
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
        &["│> Bach Mai                   1,200    30.0    60%     48,000   2.0 LOW        │"],
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
            "│> Province 79          1     2,500    72.0    83%    300,000   6.0            │",
            "│  Province 01          3     1,500    36.0    33%    138,000   4.6 2 low 1 sil│",
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
            "│> Province 01          3     1,500    36.0    33%    138,000   4.6 2 low 1 sil│",
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
            "│ No proposal: this server has no allocation planner yet.                      │",
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
            "┌ Stock · Nation › 01 › 001 › hn-01 · under 3 days highlighted ────────────────┐",
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
            "┌ Nation › 01 › 005 › hn-03 ───────────────────────────────────────────────────┐",
            "│ Thanh Nhan (hn-03) province 01 · district 005                                │",
            "│ Today        0 doses, 0% of 1,000 a day                                      │",
            "│ Since start  0   all time 10,000                                             │",
            "│ Rate         0.0/min over the last minute                                    │",
            "│ Last dose    none since the server started  SILENT                           │",
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
            "│  WARN low stock       hn-01 (Bach Mai): 2.0 days of supply (48000 doses)     │",
            "│  WARN site silent     hn-03 (Thanh Nhan): no dose since the server started   │",
            "│           ┌ Keys ────────────────────────────────────────────────┐           │",
            "│           │ Tab, Shift-Tab, 1-4  switch view                     │           │",
            "│           │ ↑ ↓, j k, PgUp PgDn  move the selection              │           │",
            "│           │ Enter                open the area, site or alert    │           │",
            "│           │ Esc                  clear the filter, or go up      │           │",
            "│           │ /                    filter rows (Enter keeps it)    │           │",
            "│           │ s                    sort by the next column         │           │",
            "│           │ ?                    this help (any key closes)      │           │",
            "│           │ q, Ctrl-C            quit                            │           │",
            "│           │                                                      │           │",
            "│           │ Sites under 3 days of supply are marked LOW.         │           │",
            "│           └──────────────────────────────────────────────────────┘           │",
            "│                                                                              │",
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
            "│ No proposal: this server has no allocation planner yet.                      │",
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
    assert!(
        text[provinces + 2].starts_with("│Province 10 "),
        "{}",
        text[provinces + 2]
    );
    // The header and ten provinces of fifty sites each, all shown.
    assert_eq!(
        text.iter().filter(|l| l.starts_with("│Province ")).count(),
        11
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
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
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
