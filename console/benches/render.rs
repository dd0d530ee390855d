//! The console's own cost at a 500-site campaign: what one second of a running console does —
//! parse one snapshot (the server sends one a second), apply it, draw, then apply a tick and draw
//! again — into a real crossterm backend writing escape codes to a sink, so the terminal's
//! encoding is counted too. Each iteration uses the next of a few snapshots whose figures
//! differ, as successive seconds do, so drawing is not a no-op diff.
//!
//! `cargo bench -p vaxcamp-console --bench render`. The time of `one_second_*` divided by one
//! second is the console's share of a core at a 1 s refresh.

use std::hint::black_box;
use std::io::Sink;

use criterion::{Criterion, criterion_group, criterion_main};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use vaxcamp_console::app::{App, Event, View};
use vaxcamp_console::feed::{FeedEvent, Snapshot};
use vaxcamp_console::sample;
use vaxcamp_console::theme::Theme;

const SITES: usize = 500;

/// Snapshots of successive seconds, as JSON, with every site's figures moving.
fn snapshots(count: usize) -> Vec<String> {
    (0..count)
        .map(|second| {
            let mut snapshot = sample::campaign(SITES, sample::NOW + second as i64);
            for (i, site) in snapshot.sites.iter_mut().enumerate() {
                site.doses_today += (second * (i % 5)) as u64;
                site.rate_per_s += second as f64 * 0.01;
                for p in &mut site.stock {
                    p.remaining = p.remaining.saturating_sub(second as u64);
                }
            }
            snapshot.doses.today += second as u64 * 75;
            snapshot.doses.history_per_s.rotate_left(second);
            serde_json::to_string(&snapshot).unwrap_or_default()
        })
        .collect()
}

fn terminal(width: u16, height: u16) -> Terminal<CrosstermBackend<Sink>> {
    let options = TerminalOptions {
        viewport: Viewport::Fixed(Rect::new(0, 0, width, height)),
    };
    match Terminal::with_options(CrosstermBackend::new(std::io::sink()), options) {
        Ok(terminal) => terminal,
        Err(e) => panic!("a terminal on a sink: {e}"),
    }
}

fn one_second(c: &mut Criterion, name: &str, view: View, width: u16, height: u16) {
    let texts = snapshots(8);
    let mut app = App::new("http://127.0.0.1:8080", Theme::colour(), sample::NOW);
    app.view = view;
    let mut terminal = terminal(width, height);
    let mut next = 0usize;
    c.bench_function(name, |b| {
        b.iter(|| {
            let text = &texts[next % texts.len()];
            next += 1;
            let snapshot: Snapshot = serde_json::from_str(text).unwrap_or_default();
            app.update(Event::Feed(FeedEvent::Snapshot(Box::new(snapshot))));
            let _ = terminal.draw(|frame| frame.render_widget(&app, frame.area()));
            app.update(Event::Tick {
                now: sample::NOW + next as i64,
            });
            let _ = terminal.draw(|frame| frame.render_widget(&app, frame.area()));
            black_box(&app);
        });
    });
}

fn parse(c: &mut Criterion) {
    let texts = snapshots(8);
    println!("a 500-site snapshot is {} bytes of JSON", texts[0].len());
    let mut next = 0usize;
    c.bench_function("parse_500_site_snapshot", |b| {
        b.iter(|| {
            next += 1;
            black_box(serde_json::from_str::<Snapshot>(&texts[next % texts.len()]).ok())
        });
    });
}

fn benches(c: &mut Criterion) {
    parse(c);
    one_second(c, "one_second_overview_80x24", View::Overview, 80, 24);
    one_second(c, "one_second_overview_200x60", View::Overview, 200, 60);
    one_second(c, "one_second_areas_200x60", View::Areas, 200, 60);
    one_second(c, "one_second_stock_200x60", View::Stock, 200, 60);
}

criterion_group!(render, benches);
criterion_main!(render);
