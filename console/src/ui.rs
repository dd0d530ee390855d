//! Drawing: `impl Widget for &App`. Reads the state, never changes it.
//!
//! ```text
//! ┌ header: name, views (Tab), connection ─────────────────────────────┐
//! │ banner: only when the server is unreachable                         │
//! │ body: the current view                                              │
//! └ footer: keys, or the filter being typed ────────────────────────────┘
//! ```
//! Every size is laid out from the terminal's: 80×24 shows everything once, larger terminals
//! give the tables more rows and the sparkline more bars.

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Clear, HighlightSpacing, Paragraph, Row, Sparkline, StatefulWidget, Table,
    TableState, Widget, Wrap,
};

use crate::allocation::{Level, Plan};
use crate::app::{
    App, AreaRow, Connection, Proposal, ShipmentField, ShipmentForm, SortColumn, StockSort, View,
    is_low,
};
use crate::feed::{Analytics, SiteLive, Snapshot};
use crate::format::width as text_width;
use crate::format::{
    ago, days, fit, lag, local_clock, millis, pad, percent, rate, rate_short, thousands, zone,
};

/// The most columns a province's or district's name takes in a line of text (a title, the
/// site's page), where no table column bounds it: two such names, a site id and the sort still
/// fit in the title of an 80-column screen. Tables cut names to their column instead.
const NAME_IN_TEXT_WIDTH: usize = 20;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [header, body, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        self.render_header(header, buf);
        let body = match self.banner(usize::from(area.width)) {
            Some(banner) if body.height > 2 => {
                let [line, rest] =
                    Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(body);
                Paragraph::new(banner).render(line, buf);
                rest
            }
            _ => body,
        };
        match &self.snapshot {
            None => self.render_waiting(body, buf),
            Some(snapshot) => match self.view {
                View::Overview => self.render_overview(snapshot, body, buf),
                View::Areas => self.render_areas(body, buf),
                View::Stock => self.render_stock(snapshot, body, buf),
                View::Alerts => self.render_alerts(snapshot, body, buf),
            },
        }
        self.render_footer(footer, buf);
        if self.show_help {
            self.render_help(area, buf);
        }
    }
}

impl App {
    fn render_header(&self, area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        let mut spans = vec![Span::styled(" vaxcamp ", theme.title), Span::raw(" ")];
        let alerts = self.snapshot.as_ref().map_or(0, |s| s.alerts.len());
        for view in View::ALL {
            let label = match view {
                View::Alerts if alerts > 0 => format!(" {} {alerts} ", view.title()),
                _ => format!(" {} ", view.title()),
            };
            let style = if view == self.view {
                theme.selected
            } else if view == View::Alerts && alerts > 0 {
                theme.warn
            } else {
                Style::new()
            };
            spans.push(Span::styled(label, style));
        }
        let (status, style) = match &self.connection {
            // Connected, but the figures stopped moving: never "live".
            Connection::Live if self.is_stale() => (
                format!("◌ stale, {} old ", ago(self.data_age())),
                theme.warn,
            ),
            Connection::Live => match &self.snapshot {
                Some(s) => (
                    format!("● live {} {} ", self.clock(s.generated_at), self.zone()),
                    theme.good,
                ),
                None => ("● live ".to_owned(), theme.good),
            },
            Connection::Connecting { .. } if self.snapshot.is_some() => {
                ("○ reconnecting ".to_owned(), theme.warn)
            }
            Connection::Connecting { .. } => ("○ connecting ".to_owned(), theme.warn),
            Connection::Lost { retry_at, .. } => (
                format!("✕ offline, retry in {} ", ago(retry_at - self.now)),
                theme.bad,
            ),
        };
        let status_width = status.chars().count() as u16;
        let [left, right] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(status_width)]).areas(area);
        Line::from(spans).render(left, buf);
        Line::styled(status, style)
            .alignment(Alignment::Right)
            .render(right, buf);
    }

    /// A time of day in the campaign's time zone (UTC from an older server).
    fn clock(&self, unix: i64) -> String {
        local_clock(unix, self.utc_offset())
    }

    /// The campaign's time zone, as `UTC+7`.
    fn zone(&self) -> String {
        zone(self.utc_offset())
    }

    fn utc_offset(&self) -> i64 {
        self.snapshot.as_ref().map_or(0, |s| s.utc_offset_s)
    }

    /// A line under the header when the figures on screen are not live: the server cannot be
    /// reached (why, when the next try is, how old the figures are), it reports an error, or it
    /// has sent nothing new for a while. The error is cut to leave room for the rest.
    fn banner(&self, width: usize) -> Option<Line<'_>> {
        let data_from = |s: &Snapshot| {
            format!(
                " Data from {} {}, {} old.",
                self.clock(s.generated_at),
                self.zone(),
                ago(self.data_age())
            )
        };
        let (head, error, tail, style) = match &self.connection {
            Connection::Lost {
                error, retry_at, ..
            } => {
                let mut tail = format!(". Retry in {}.", ago(retry_at - self.now));
                if let Some(s) = &self.snapshot {
                    tail.push_str(&data_from(s));
                }
                (" Offline: ", error.as_str(), tail, self.theme.bad)
            }
            Connection::Live => {
                let snapshot = self.snapshot.as_ref()?;
                match &self.server_error {
                    Some(error) => (
                        " Server error: ",
                        error.as_str(),
                        format!(".{}", data_from(snapshot)),
                        self.theme.bad,
                    ),
                    None if self.is_stale() => (
                        " Stale: ",
                        "connected, but no new figures",
                        format!(".{}", data_from(snapshot)),
                        self.theme.warn,
                    ),
                    None => return None,
                }
            }
            Connection::Connecting { .. } => return None,
        };
        let room = width.saturating_sub(head.len() + text_width(&tail));
        Some(Line::styled(
            format!("{head}{}{tail}", fit(error, room.max(12))),
            style,
        ))
    }

    fn render_waiting(&self, area: Rect, buf: &mut Buffer) {
        let text = match &self.connection {
            Connection::Lost {
                error,
                failures,
                retry_at,
            } => vec![
                Line::styled(
                    format!("Cannot reach the server at {}", self.server),
                    self.theme.bad,
                ),
                Line::raw(error.clone()),
                Line::raw(format!(
                    "Retrying in {} ({failures} failed {}). Press q to quit.",
                    ago(retry_at - self.now),
                    if *failures == 1 {
                        "attempt"
                    } else {
                        "attempts"
                    }
                )),
            ],
            _ => vec![Line::raw(format!(
                "Waiting for the first snapshot from {}",
                self.server
            ))],
        };
        let height = text.len() as u16;
        let [_, middle, _] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(height),
            Constraint::Fill(1),
        ])
        .areas(area);
        Paragraph::new(text)
            .alignment(Alignment::Center)
            .wrap(Wrap { trim: true })
            .render(middle, buf);
    }

    fn render_footer(&self, area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        let line = if let Some(form) = &self.shipment {
            match &form.error {
                Some(error) => Line::from(vec![
                    Span::styled(" Shipment: ", theme.title),
                    Span::styled(error.clone(), theme.bad),
                    Span::styled("   Esc cancel", theme.dim),
                ]),
                None => Line::from(vec![
                    Span::styled(" Shipment: ", theme.title),
                    Span::styled(
                        "Tab next field · ←→ level · Enter propose · Esc cancel",
                        theme.dim,
                    ),
                ]),
            }
        } else if self.editing_filter {
            Line::from(vec![
                Span::styled(" Filter: ", theme.title),
                Span::raw(self.filter.clone()),
                Span::styled("_", theme.dim),
                Span::styled("   Enter keep · Esc clear", theme.dim),
            ])
        } else {
            let proposal_keys: &[(&str, &str)] = &[
                ("Tab", "view"),
                ("↑↓", "move"),
                ("a", "shipment"),
                ("Esc", "close"),
                ("/", "filter"),
                ("?", "help"),
                ("q", "quit"),
            ];
            let keys: &[(&str, &str)] = if self.view == View::Stock && self.proposal_open() {
                proposal_keys
            } else {
                &[
                    ("Tab", "view"),
                    ("↑↓", "move"),
                    ("Enter", "open"),
                    ("Esc", "back"),
                    ("/", "filter"),
                    ("s", "sort"),
                    ("?", "help"),
                    ("q", "quit"),
                ]
            };
            let mut spans = vec![Span::raw(" ")];
            for (key, what) in keys {
                spans.push(Span::styled(*key, theme.title));
                spans.push(Span::styled(format!(" {what}  "), theme.dim));
            }
            Line::from(spans)
        };
        line.render(area, buf);
    }

    fn render_overview(&self, s: &Snapshot, area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        // On a tall screen (a wall) the chart grows and the busiest provinces join the overview.
        let tall = area.height >= 30;
        let chart_height = if tall { (area.height / 3).max(7) } else { 7 };
        let [doses_area, lower, provinces_area] = Layout::vertical([
            Constraint::Length(chart_height),
            if tall {
                Constraint::Length(12)
            } else {
                Constraint::Fill(1)
            },
            Constraint::Fill(if tall { 1 } else { 0 }),
        ])
        .areas(area);

        // Doses: the figures, then the sparkline of the last ten minutes.
        let block = Block::bordered().title(Span::styled(" Doses ", theme.title));
        let inner = block.inner(doses_area);
        block.render(doses_area, buf);
        let [figures, chart, legend] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(inner);
        // "Today" starts at midnight in the campaign's time zone; a later start means the server
        // could not learn the day's earlier doses, and the label says from when it counts.
        let local = s.generated_at + s.utc_offset_s;
        let midnight = local - local.rem_euclid(86_400) - s.utc_offset_s;
        let today_label = if s.today_since > midnight {
            format!("today (since {})", &self.clock(s.today_since)[..5])
        } else {
            "today".to_owned()
        };
        Line::from(vec![
            Span::raw(" now "),
            Span::styled(format!("{}/s", rate(s.doses.per_s_now)), theme.value),
            Span::raw("   last min "),
            Span::styled(format!("{}/s", rate(s.doses.per_s_1m)), theme.value),
            Span::raw(format!("   {today_label} ")),
            Span::styled(thousands(s.doses.today), theme.value),
            Span::raw("   all time "),
            Span::styled(thousands(s.doses.total), theme.value),
        ])
        .render(figures, buf);
        let (bars, seconds_per_bar) = bars(&s.doses.history_per_s, chart.width.into());
        let peak = bars.iter().copied().fold(0.0_f64, f64::max);
        // Right-aligned, so that the newest second is always at the right edge.
        let chart_width = (bars.len() as u16).min(chart.width);
        let chart = Rect {
            x: chart.x + chart.width - chart_width,
            width: chart_width,
            ..chart
        };
        Sparkline::default()
            .data(bars.iter().map(|b| (b * 10.0).round() as u64))
            .style(theme.chart)
            .render(chart, buf);
        Line::styled(
            format!(
                " last {} min, {} s a bar, peak {}/s",
                (bars.len() * seconds_per_bar).div_ceil(60),
                seconds_per_bar,
                rate(peak)
            ),
            theme.dim,
        )
        .render(legend, buf);

        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(lower);
        let label = |text: &str| Span::raw(format!(" {text:<14}"));
        let critical = s.alerts.iter().filter(|a| a.is_critical()).count();
        let campaign = vec![
            Line::from(vec![
                label("Certificates"),
                Span::raw("partial  "),
                Span::styled(thousands(s.certificates.partial), theme.value),
            ]),
            Line::from(vec![
                label(""),
                Span::raw("complete "),
                Span::styled(thousands(s.certificates.complete), theme.value),
            ]),
            Line::from(vec![
                label("Registered"),
                Span::styled(thousands(s.registrations.total), theme.value),
            ]),
            Line::from(vec![
                label(""),
                Span::raw(format!(
                    "+{} since start",
                    thousands(s.registrations.since_start)
                )),
            ]),
            Line::from(vec![
                label("Check-ins"),
                Span::styled(thousands(s.checkins_since_start), theme.value),
                Span::raw(" since start"),
            ]),
            Line::from(vec![
                label("Stock"),
                Span::styled(thousands(s.stock.remaining), theme.value),
                Span::raw(" doses"),
            ]),
            Line::from(vec![
                label(""),
                Span::raw(format!("{} days of supply", days(s.stock.days_of_supply))),
            ]),
            Line::from(vec![
                label("Alerts"),
                Span::styled(
                    format!("{} ({critical} critical)", s.alerts.len()),
                    if critical > 0 {
                        theme.bad
                    } else if s.alerts.is_empty() {
                        theme.good
                    } else {
                        theme.warn
                    },
                ),
            ]),
        ];
        let block = Block::bordered().title(Span::styled(" Campaign ", theme.title));
        Paragraph::new(campaign).block(block).render(left, buf);

        let label = |text: &str| Span::raw(format!(" {text:<10}"));
        let queued: usize = s.queues.depths.iter().sum();
        let fullest = s.queues.depths.iter().copied().max().unwrap_or(0);
        let queue_style =
            if fullest as f64 > s.queues.capacity as f64 * s.thresholds.queue_alert_fraction {
                theme.bad
            } else {
                Style::new()
            };
        let window = match s.latency_ms.window_s {
            0 => String::new(),
            60 => "(1 min)".to_owned(),
            w => format!("({w} s)"),
        };
        let mut server = vec![
            Line::from(vec![
                label("Latency"),
                Span::raw("p50 "),
                Span::styled(millis(s.latency_ms.p50_ms), theme.value),
                Span::raw("  p99 "),
                Span::styled(millis(s.latency_ms.p99_ms), theme.value),
            ]),
            Line::from(vec![
                label(&window),
                Span::raw("p99.9 "),
                Span::styled(millis(s.latency_ms.p999_ms), theme.value),
                Span::styled(format!("  of {}", thousands(s.latency_ms.count)), theme.dim),
            ]),
            Line::from(vec![
                label("Queues"),
                Span::styled(thousands(queued as u64), theme.value),
                Span::raw(format!(" waiting in {} shards", s.queues.depths.len())),
            ]),
            Line::from(vec![
                label(""),
                Span::styled(
                    format!(
                        "fullest {fullest} of {} ({})",
                        s.queues.capacity,
                        percent(fullest as u64, s.queues.capacity as u64)
                    ),
                    queue_style,
                ),
            ]),
        ];
        if let Some(analytics) = &s.analytics {
            server.extend(
                self.analytics_lines(analytics, usize::from(right.width.saturating_sub(2))),
            );
        }
        server.extend([
            Line::from(vec![
                label("Errors"),
                Span::styled(thousands(s.errors.total), theme.value),
                Span::raw(" since start"),
            ]),
            Line::from(vec![
                label(""),
                Span::styled(
                    format!("{} in the last minute", thousands(s.errors.last_minute)),
                    if s.errors.last_minute > 0 {
                        theme.warn
                    } else {
                        Style::new()
                    },
                ),
            ]),
        ]);
        // Error kinds, most frequent first, in the lines left; what does not fit is summed up
        // in a last line rather than cut off unseen.
        let inner_width = right.width.saturating_sub(2) as usize;
        let room_lines = usize::from(right.height.saturating_sub(2)).saturating_sub(server.len());
        let kinds = &s.errors.by_kind;
        let shown = if kinds.len() <= room_lines {
            kinds.len()
        } else {
            room_lines.saturating_sub(1)
        };
        for error in &kinds[..shown] {
            let count = thousands(error.count);
            let room = inner_width.saturating_sub(count.len() + 4);
            server.push(Line::raw(format!("   {} {count}", pad(&error.kind, room))));
        }
        if shown < kinds.len() && room_lines > 0 {
            let rest = &kinds[shown..];
            let count = thousands(rest.iter().map(|e| e.count).sum());
            let room = inner_width.saturating_sub(count.len() + 4);
            server.push(Line::styled(
                format!(
                    "   {} {count}",
                    pad(&format!("+{} more kinds", rest.len()), room)
                ),
                theme.dim,
            ));
        }
        let block = Block::bordered().title(Span::styled(" Server ", theme.title));
        Paragraph::new(server).block(block).render(right, buf);

        if provinces_area.height >= 4 {
            let block =
                Block::bordered().title(Span::styled(" Provinces · busiest first ", theme.title));
            let table = self.area_table(&self.province_rows(), 0, block);
            Widget::render(table, provinces_area, buf);
        }
    }

    /// The analytics side in the server box: backend and lag (`LATE` above the server's alert
    /// threshold), rows waiting, and rows dropped or the backend's last error when there are.
    fn analytics_lines(&self, analytics: &Analytics, width: usize) -> Vec<Line<'static>> {
        let theme = &self.theme;
        let label = |text: &str| Span::raw(format!(" {text:<10}"));
        let lagging = analytics.is_lagging();
        let mut lines = vec![
            Line::from(vec![
                label("Analytics"),
                Span::raw(format!("{} lag ", analytics.backend)),
                Span::styled(
                    lag(analytics.lag_ms),
                    if lagging { theme.warn } else { theme.value },
                ),
                Span::styled(if lagging { " LATE" } else { "" }, theme.warn),
            ]),
            Line::from(vec![
                label(""),
                Span::styled(thousands(analytics.outbox_rows), theme.value),
                Span::raw(if analytics.outbox_rows == 1 {
                    " row waiting"
                } else {
                    " rows waiting"
                }),
            ]),
        ];
        if analytics.dropped_rows > 0 {
            lines.push(Line::from(vec![
                label(""),
                Span::styled(
                    format!("{} rows dropped", thousands(analytics.dropped_rows)),
                    theme.bad,
                ),
            ]));
        }
        if let Some(error) = &analytics.last_error {
            lines.push(Line::from(vec![
                label(""),
                Span::styled(
                    fit(&format!("error: {error}"), width.saturating_sub(11)),
                    theme.warn,
                ),
            ]));
        }
        lines
    }

    /// The area table for rows at `depth` (0 provinces, 1 districts, 2 sites).
    fn area_table<'a>(&self, rows: &[AreaRow], depth: usize, block: Block<'a>) -> Table<'a> {
        let theme = &self.theme;
        let sites_level = depth == 2;
        let header_label = match depth {
            0 => "Province",
            1 => "District",
            _ => "Site",
        };
        let arrow = |column: SortColumn| {
            if self.view == View::Areas && self.sort == column {
                "▼"
            } else {
                ""
            }
        };
        let right = |text: String| Cell::from(Line::from(text).right_aligned());
        // At the sites level the second column is the site's dose errors over the last minute;
        // above it, the number of sites in the area.
        let header = Row::new(vec![
            Cell::from(format!("{header_label}{}", arrow(SortColumn::Name))),
            right(if sites_level {
                "Err".into()
            } else {
                "Sites".into()
            }),
            right(format!("{}Today", arrow(SortColumn::Today))),
            right(format!("{}/min", arrow(SortColumn::Rate))),
            right(format!("{}Share", arrow(SortColumn::Share))),
            right(format!("{}Stock", arrow(SortColumn::Stock))),
            right(format!("{}Days", arrow(SortColumn::Days))),
            Cell::from("Flags"),
        ])
        .style(theme.title);
        let table_rows: Vec<Row> = rows
            .iter()
            .map(|row| {
                let style = if row.out > 0 && (sites_level || row.out == row.sites) {
                    theme.bad
                } else if row.low > 0 || row.out > 0 {
                    theme.warn
                } else {
                    Style::new()
                };
                let second = if sites_level {
                    let errors = right(thousands(row.errors_last_minute));
                    if row.errors_last_minute > 0 {
                        errors.style(theme.warn)
                    } else {
                        errors
                    }
                } else {
                    right(row.sites.to_string())
                };
                Row::new(vec![
                    Cell::from(row.label.clone()),
                    second,
                    right(thousands(row.doses_today)),
                    right(rate_short(row.rate_per_s * 60.0)),
                    right(percent(row.doses_today, row.capacity)),
                    right(thousands(row.remaining)),
                    right(days(row.days_of_supply)),
                    Cell::from(flags(row, sites_level)),
                ])
                .style(style)
            })
            .collect();
        let widths = [
            Constraint::Min(12),
            Constraint::Length(5),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(5),
            Constraint::Length(11),
        ];
        Table::new(table_rows, widths).header(header).block(block)
    }

    /// Where the drill-down is, for a title: `Nation › Hà Nội › Ba Đình › hn-01`. A province
    /// or district by its name where the server has one (cut to [`NAME_IN_TEXT_WIDTH`], so
    /// that a long name leaves room for the rest of the title), by its code otherwise; a site
    /// by its id, as the page under the title names it in full.
    fn breadcrumb(&self) -> String {
        let mut parts = vec!["Nation".to_owned()];
        if let Some(province) = self.path.first() {
            parts.push(self.province_in_text(province));
        }
        if let [province, district, ..] = self.path.as_slice() {
            parts.push(self.district_in_text(province, district));
        }
        parts.extend(self.path.iter().skip(2).cloned());
        parts.join(" › ")
    }

    /// A province in a line of text: its name, cut to [`NAME_IN_TEXT_WIDTH`], or its code.
    fn province_in_text(&self, province: &str) -> String {
        self.province_name(province)
            .map_or_else(|| province.to_owned(), |name| fit(name, NAME_IN_TEXT_WIDTH))
    }

    /// A district in a line of text: its name, cut to [`NAME_IN_TEXT_WIDTH`], or its code.
    fn district_in_text(&self, province: &str, district: &str) -> String {
        self.district_name(province, district)
            .map_or_else(|| district.to_owned(), |name| fit(name, NAME_IN_TEXT_WIDTH))
    }

    fn render_areas(&self, area: Rect, buf: &mut Buffer) {
        if self.path.len() >= 3 {
            match self.site(&self.path[2]) {
                Some(site) => self.render_site(site, area, buf),
                None => {
                    let block = Block::bordered().title(format!(" {} ", self.breadcrumb()));
                    Paragraph::new(" This site is no longer in the campaign. Esc goes back.")
                        .block(block)
                        .render(area, buf);
                }
            }
            return;
        }
        let theme = &self.theme;
        let rows = self.area_rows();
        let mut title = vec![
            Span::styled(format!(" {} ", self.breadcrumb()), theme.title),
            Span::styled(format!("· by {} ", self.sort.label()), theme.dim),
        ];
        if !self.filter.is_empty() {
            title.push(Span::styled(
                format!("· filter \"{}\" ", self.filter),
                theme.warn,
            ));
        }
        let block = Block::bordered().title(Line::from(title));
        if rows.is_empty() {
            let text = if self.filter.is_empty() {
                " No sites in this campaign yet."
            } else {
                " Nothing matches the filter. Esc clears it."
            };
            Paragraph::new(text).block(block).render(area, buf);
            return;
        }
        let table = self
            .area_table(&rows, self.path.len(), block)
            .row_highlight_style(theme.selected)
            .highlight_symbol("> ")
            .highlight_spacing(HighlightSpacing::Always);
        let mut state = TableState::default().with_selected(Some(self.selected[1]));
        StatefulWidget::render(table, area, buf, &mut state);
    }

    fn render_site(&self, site: &SiteLive, area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        let block = Block::bordered().title(Span::styled(
            format!(" {} ", self.breadcrumb()),
            theme.title,
        ));
        let inner = block.inner(area);
        block.render(area, buf);
        let label = |text: &str| Span::raw(format!(" {text:<13}"));
        let low_days = self.low_days();
        let low = is_low(site.remaining, site.days_of_supply, low_days);
        let mut lines = vec![
            Line::from(vec![
                Span::styled(format!(" {} ", site.name), theme.value),
                Span::styled(
                    format!(
                        "({}) province {} · district {}{}",
                        site.site_id,
                        self.province_in_text(&site.province),
                        self.district_in_text(&site.province, &site.district),
                        site.commune
                            .as_ref()
                            .map(|c| format!(" · commune {c}"))
                            .unwrap_or_default()
                    ),
                    theme.dim,
                ),
            ]),
            Line::from(vec![
                label("Today"),
                Span::styled(thousands(site.doses_today), theme.value),
                Span::raw(format!(
                    " doses, {} of {} a day",
                    percent(site.doses_today, u64::from(site.daily_capacity)),
                    thousands(u64::from(site.daily_capacity))
                )),
            ]),
            Line::from(vec![
                label("Since start"),
                Span::styled(thousands(site.doses_since_start), theme.value),
                Span::raw(format!("   all time {}", thousands(site.doses_total))),
            ]),
            Line::from(vec![
                label("Rate"),
                Span::styled(format!("{}/min", rate(site.rate_per_s * 60.0)), theme.value),
                Span::raw(" over the last minute"),
            ]),
            Line::from(vec![
                label("Last dose"),
                match site.last_dose_at {
                    Some(at) => Span::raw(format!(
                        "{} {} ({} ago)",
                        self.clock(at),
                        self.zone(),
                        ago(self.now - at)
                    )),
                    None => Span::raw("none since the server started"),
                },
                Span::styled(if site.silent { "  SILENT" } else { "" }, theme.warn),
            ]),
            Line::from(vec![
                label("Errors"),
                Span::styled(
                    thousands(site.errors_last_minute),
                    if site.errors_last_minute > 0 {
                        theme.warn
                    } else {
                        theme.value
                    },
                ),
                Span::raw(format!(
                    " in the last minute, {} since start",
                    thousands(site.errors_since_start)
                )),
            ]),
            Line::from(vec![
                label("Stock"),
                Span::styled(thousands(site.remaining), theme.value),
                Span::raw(format!(
                    " doses · {}/day · {} days",
                    site.uptake_per_day
                        .map_or_else(|| "-".to_owned(), |u| thousands(u.round() as u64)),
                    days(site.days_of_supply)
                )),
                Span::styled(
                    if site.remaining == 0 {
                        "  OUT"
                    } else if low {
                        "  LOW"
                    } else {
                        ""
                    },
                    if site.remaining == 0 {
                        theme.bad
                    } else {
                        theme.warn
                    },
                ),
            ]),
            Line::raw(""),
        ];
        let [text, products] =
            Layout::vertical([Constraint::Length(lines.len() as u16), Constraint::Fill(1)])
                .areas(inner);
        Paragraph::new(std::mem::take(&mut lines)).render(text, buf);
        let header = Row::new(vec![
            Cell::from("Product"),
            Cell::from(Line::from("Stock").right_aligned()),
            Cell::from(Line::from("/day").right_aligned()),
            Cell::from(Line::from("Days").right_aligned()),
            Cell::from(""),
        ])
        .style(theme.title);
        let rows: Vec<Row> = site
            .stock
            .iter()
            .map(|p| {
                let low = is_low(p.remaining, p.days_of_supply, low_days);
                Row::new(vec![
                    Cell::from(p.product.clone()),
                    Cell::from(Line::from(thousands(p.remaining)).right_aligned()),
                    Cell::from(
                        Line::from(
                            p.uptake_per_day
                                .map_or_else(|| "-".to_owned(), |u| thousands(u.round() as u64)),
                        )
                        .right_aligned(),
                    ),
                    Cell::from(Line::from(days(p.days_of_supply)).right_aligned()),
                    Cell::from(if p.remaining == 0 {
                        "OUT"
                    } else if low {
                        "LOW"
                    } else {
                        ""
                    }),
                ])
                .style(if p.remaining == 0 {
                    theme.bad
                } else if low {
                    theme.warn
                } else {
                    Style::new()
                })
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(16),
                Constraint::Length(10),
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(4),
            ],
        )
        .header(header)
        .block(Block::new().padding(ratatui::widgets::Padding::horizontal(1)));
        Widget::render(table, products, buf);
    }

    fn render_stock(&self, s: &Snapshot, area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        let low_days = self.low_days();
        let scope = self.sites_in_scope();
        // Stock by product in scope: the national figures at the top level, added up below it.
        let mut products: Vec<(String, u64, Option<f64>)> = Vec::new();
        if self.path.is_empty() {
            products.extend(
                s.stock
                    .by_product
                    .iter()
                    .map(|p| (p.product.clone(), p.remaining, p.uptake_per_day)),
            );
        } else {
            for site in &scope {
                for p in &site.stock {
                    match products.iter_mut().find(|(name, _, _)| *name == p.product) {
                        Some(entry) => {
                            entry.1 += p.remaining;
                            if let Some(u) = p.uptake_per_day {
                                *entry.2.get_or_insert(0.0) += u;
                            }
                        }
                        None => products.push((p.product.clone(), p.remaining, p.uptake_per_day)),
                    }
                }
            }
            products.sort_by(|a, b| a.0.cmp(&b.0));
        }
        // One line per product, as many as the space allows (up to half the view, leaving the
        // by-site table a few rows); what does not fit is summed up in a last line.
        let plan_height: u16 = if self.proposal_open() { 6 } else { 3 };
        let room = usize::from(
            (area.height / 2)
                .min(area.height.saturating_sub(plan_height + 6))
                .saturating_sub(2),
        )
        .max(1);
        let product_lines = products.len().clamp(1, room);
        let summary_height = (product_lines + 2) as u16;
        // A proposal (or its wait, or its error) takes the by-site table's place; otherwise the
        // allocation panel is a line at the bottom: a hint, or the shipment form.
        let [summary_area, table_area, plan_area] = Layout::vertical([
            Constraint::Length(summary_height),
            Constraint::Fill(if self.proposal_open() { 0 } else { 1 }),
            if self.proposal_open() {
                Constraint::Fill(1)
            } else {
                Constraint::Length(3)
            },
        ])
        .areas(area);
        let shown = if products.len() <= product_lines {
            products.len()
        } else {
            product_lines - 1
        };
        let mut lines: Vec<Line> = products[..shown]
            .iter()
            .map(|(product, left, uptake)| {
                let d = uptake.filter(|u| *u > 0.0).map(|u| *left as f64 / u);
                Line::from(vec![
                    Span::raw(format!(" {}", pad(product, 14))),
                    Span::styled(format!("{:>11}", thousands(*left)), theme.value),
                    Span::raw(format!(
                        " doses  {:>9}/day  {:>5} days",
                        uptake.map_or_else(|| "-".to_owned(), |u| thousands(u.round() as u64)),
                        days(d)
                    )),
                ])
                .style(if is_low(*left, d, low_days) {
                    theme.warn
                } else {
                    Style::new()
                })
            })
            .collect();
        if shown < products.len() {
            let rest = &products[shown..];
            let names: Vec<&str> = rest.iter().map(|(name, _, _)| name.as_str()).collect();
            let line = format!(
                " +{} more: {} doses of {}",
                rest.len(),
                thousands(rest.iter().map(|(_, left, _)| left).sum()),
                names.join(", ")
            );
            lines.push(Line::styled(
                fit(&line, usize::from(area.width.saturating_sub(2))),
                theme.dim,
            ));
        }
        if lines.is_empty() {
            lines.push(Line::raw(" No lots allocated yet."));
        }
        let block = Block::bordered().title(Line::from(vec![
            Span::styled(format!(" Stock · {} ", self.breadcrumb()), theme.title),
            Span::styled(format!("· under {low_days} days highlighted "), theme.dim),
        ]));
        Paragraph::new(lines).block(block).render(summary_area, buf);

        if !self.proposal_open() {
            self.render_stock_table(table_area, buf);
        }
        self.render_allocation(plan_area, buf);
    }

    /// Every site × product in scope, lowest days of supply first.
    fn render_stock_table(&self, table_area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        let rows = self.stock_rows();
        let mut title = vec![Span::styled(
            format!(" By site · by {} ", self.stock_sort.label()),
            theme.title,
        )];
        if !self.filter.is_empty() {
            title.push(Span::styled(
                format!("· filter \"{}\" ", self.filter),
                theme.warn,
            ));
        }
        let block = Block::bordered().title(Line::from(title));
        if rows.is_empty() {
            let text = if self.filter.is_empty() {
                " No stock to show."
            } else {
                " Nothing matches the filter. Esc clears it."
            };
            Paragraph::new(text).block(block).render(table_area, buf);
        } else {
            let arrow = |column: StockSort| if self.stock_sort == column { "▲" } else { "" };
            let header = Row::new(vec![
                Cell::from(format!("Site{}", arrow(StockSort::Name))),
                Cell::from("Product"),
                Cell::from(Line::from(format!("{}Stock", arrow(StockSort::Stock))).right_aligned()),
                Cell::from(Line::from("/day").right_aligned()),
                Cell::from(Line::from(format!("{}Days", arrow(StockSort::Days))).right_aligned()),
                Cell::from(""),
            ])
            .style(theme.title);
            let table_rows: Vec<Row> =
                rows.iter()
                    .map(|row| {
                        let flag = if row.remaining == 0 {
                            "OUT"
                        } else if row.low {
                            "LOW"
                        } else {
                            ""
                        };
                        Row::new(vec![
                            Cell::from(row.site_name.clone()),
                            Cell::from(row.product.clone()),
                            Cell::from(Line::from(thousands(row.remaining)).right_aligned()),
                            Cell::from(
                                Line::from(row.uptake_per_day.map_or_else(
                                    || "-".to_owned(),
                                    |u| thousands(u.round() as u64),
                                ))
                                .right_aligned(),
                            ),
                            Cell::from(Line::from(days(row.days_of_supply)).right_aligned()),
                            Cell::from(flag),
                        ])
                        .style(if row.remaining == 0 {
                            theme.bad
                        } else if row.low {
                            theme.warn
                        } else {
                            Style::new()
                        })
                    })
                    .collect();
            let table = Table::new(
                table_rows,
                [
                    Constraint::Min(14),
                    Constraint::Length(12),
                    Constraint::Length(10),
                    Constraint::Length(8),
                    Constraint::Length(6),
                    Constraint::Length(3),
                ],
            )
            .header(header)
            .block(block)
            .row_highlight_style(theme.selected)
            .highlight_symbol("> ")
            .highlight_spacing(HighlightSpacing::Always);
            let mut state = TableState::default().with_selected(Some(self.selected[2]));
            StatefulWidget::render(table, table_area, buf, &mut state);
        }
    }

    /// The shipment allocation panel: a hint, the shipment form (`a`), the wait for the
    /// server, its refusal, or the proposal with its totals and notes.
    fn render_allocation(&self, area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        let mut title = vec![Span::styled(" Shipment allocation ", theme.title)];
        if let Some(query) = self.proposal.query() {
            title.push(Span::styled(
                format!(
                    "· {}, {} doses, by {} ",
                    query.product,
                    thousands(query.quantity),
                    query.level.as_str()
                ),
                theme.dim,
            ));
        }
        if let Proposal::Ready { answer, .. } = &self.proposal {
            title.push(Span::styled(
                format!("· {} {} ", self.clock(answer.generated_at), self.zone()),
                theme.dim,
            ));
        }
        if self.proposal_open() && !self.filter.is_empty() {
            title.push(Span::styled(
                format!("· filter \"{}\" ", self.filter),
                theme.warn,
            ));
        }
        let block = Block::bordered().title(Line::from(title));
        let mut inner = block.inner(area);
        block.render(area, buf);
        if let Some(form) = &self.shipment {
            let [line, rest] =
                Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
            self.shipment_line(form).render(line, buf);
            inner = rest;
        }
        let width = usize::from(inner.width);
        match &self.proposal {
            Proposal::None if self.shipment.is_none() => {
                Line::styled(
                    " Press a to propose how to split a shipment of one product.",
                    theme.dim,
                )
                .render(inner, buf);
            }
            Proposal::None => {}
            Proposal::Loading { query, .. } => {
                Paragraph::new(Line::raw(format!(
                    " Asking the server how to split {} doses of {} by {}…",
                    thousands(query.quantity),
                    query.product,
                    query.level.as_str()
                )))
                .wrap(Wrap { trim: false })
                .render(inner, buf);
            }
            Proposal::Failed { message, .. } => {
                let mut lines: Vec<Line> = wrap(
                    &format!("No proposal: {message}"),
                    width.saturating_sub(2),
                    4,
                )
                .into_iter()
                .map(|l| Line::styled(format!(" {l}"), theme.bad))
                .collect();
                lines.push(Line::styled(
                    " a changes the shipment · Esc closes this panel",
                    theme.dim,
                ));
                Paragraph::new(lines).render(inner, buf);
            }
            Proposal::Ready { answer, .. } => self.render_plan(&answer.plan, inner, buf),
        }
    }

    /// The form: product, doses, level; the field being typed is highlighted.
    fn shipment_line(&self, form: &ShipmentForm) -> Line<'static> {
        let theme = &self.theme;
        let field = |text: String, width: usize, active: bool| {
            let text = if active && !matches!(form.field, ShipmentField::Level) {
                format!("{text}_")
            } else {
                text
            };
            Span::styled(
                format!("{:<width$}", fit(&text, width)),
                if active { theme.selected } else { theme.value },
            )
        };
        Line::from(vec![
            Span::styled(" Product ", theme.title),
            field(
                form.product.clone(),
                14,
                form.field == ShipmentField::Product,
            ),
            Span::styled("  Doses ", theme.title),
            field(
                // Digits as typed, shown with separators: 5,000.
                form.quantity
                    .parse::<u64>()
                    .map_or_else(|_| form.quantity.clone(), thousands),
                10,
                form.field == ShipmentField::Quantity,
            ),
            Span::styled("  Level ", theme.title),
            field(
                format!("‹ {} ›", form.level.as_str()),
                12,
                form.field == ShipmentField::Level,
            ),
        ])
    }

    /// The proposal: totals, one line per area (need, stock, days before → after), notes.
    fn render_plan(&self, plan: &Plan, area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        let width = usize::from(area.width);
        let totals = Line::from(vec![
            Span::raw(" Need "),
            Span::styled(thousands(plan.need_doses), theme.value),
            Span::raw("  allocated "),
            Span::styled(thousands(plan.allocated_doses), theme.value),
            Span::raw(format!(
                " of {}  held back ",
                thousands(plan.request.shipment_doses)
            )),
            Span::styled(thousands(plan.held_back_doses), theme.value),
            Span::raw("  unmet need "),
            Span::styled(
                thousands(plan.unmet_need_doses),
                if plan.unmet_need_doses > 0 {
                    theme.warn
                } else {
                    theme.value
                },
            ),
        ]);
        // Notes go under the table, each wrapped; they get at most a third of the panel so that
        // the table always shows some lines.
        let notes: Vec<Line> = plan
            .notes
            .iter()
            .flat_map(|note| {
                wrap(note, width.saturating_sub(4).max(10), 3)
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| {
                        Line::styled(
                            format!(" {} {l}", if i == 0 { "•" } else { " " }),
                            theme.dim,
                        )
                    })
            })
            .collect();
        let notes_height = (notes.len() as u16).min((area.height / 3).max(1));
        let [totals_area, table_area, notes_area] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(notes_height),
        ])
        .areas(area);
        totals.render(totals_area, buf);
        Paragraph::new(notes).render(notes_area, buf);

        let lines = self.proposal_lines();
        if lines.is_empty() {
            let text = if plan.lines.is_empty() {
                " No area can receive this product."
            } else {
                " Nothing matches the filter. Esc clears it."
            };
            Line::raw(text).render(table_area, buf);
            return;
        }
        let area_label = match plan.request.level {
            Level::Site => "Site",
            Level::District => "District",
            Level::Province => "Province",
        };
        let right = |text: String| Cell::from(Line::from(text).right_aligned());
        let header = Row::new(vec![
            Cell::from(area_label),
            right("Allocated".into()),
            right("Need".into()),
            right("Stock".into()),
            right("Days now → after".into()),
        ])
        .style(theme.title);
        let rows: Vec<Row> = lines
            .iter()
            .map(|line| {
                Row::new(vec![
                    Cell::from(self.plan_line_label(plan.request.level, line).to_owned()),
                    right(thousands(line.allocated_doses)),
                    right(thousands(line.need_doses)),
                    right(thousands(line.stock_on_hand)),
                    right(format!(
                        "{} → {}",
                        days(line.days_of_supply_before),
                        days(line.days_of_supply_after)
                    )),
                ])
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Min(12),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(16),
            ],
        )
        .header(header)
        .row_highlight_style(theme.selected)
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
        let mut state = TableState::default().with_selected(Some(self.proposal_selected));
        StatefulWidget::render(table, table_area, buf, &mut state);
    }

    fn render_alerts(&self, s: &Snapshot, area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        let alerts = self.alerts();
        let mut title = vec![Span::styled(
            format!(" Alerts · {} ", s.alerts.len()),
            theme.title,
        )];
        if !self.filter.is_empty() {
            title.push(Span::styled(
                format!("· filter \"{}\" ", self.filter),
                theme.warn,
            ));
        }
        let block = Block::bordered().title(Line::from(title));
        if alerts.is_empty() {
            let text = if self.filter.is_empty() {
                vec![
                    Line::styled(" No alerts.", theme.good),
                    Line::raw(format!(
                        " Every site is sending, stock is above {} days, queues and errors are normal.",
                        s.thresholds.low_stock_days
                    )),
                ]
            } else {
                vec![Line::raw(" Nothing matches the filter. Esc clears it.")]
            };
            Paragraph::new(text)
                .wrap(Wrap { trim: false })
                .block(block)
                .render(area, buf);
            return;
        }
        let header = Row::new(vec!["Sev", "Kind", "What"]).style(theme.title);
        // Borders, the highlight symbol, two fixed columns and their spacing.
        let message_width = usize::from(area.width.saturating_sub(2 + 2 + 4 + 15 + 2)).max(10);
        let rows: Vec<Row> = alerts
            .iter()
            .map(|alert| {
                let (severity, style) = if alert.is_critical() {
                    ("CRIT", theme.bad)
                } else {
                    ("WARN", theme.warn)
                };
                let message = wrap(&alert.message, message_width, 3);
                // `analytics rows dropped` and the like take two lines of the kind column.
                let kind = wrap(&alert.kind.replace('_', " "), 15, 2);
                let height = message.len().max(kind.len()) as u16;
                Row::new(vec![
                    Cell::from(severity).style(style),
                    Cell::from(kind.into_iter().map(Line::from).collect::<Vec<_>>()),
                    Cell::from(message.into_iter().map(Line::from).collect::<Vec<_>>()),
                ])
                .height(height.max(1))
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(4),
                Constraint::Length(15),
                Constraint::Fill(1),
            ],
        )
        .header(header)
        .block(block)
        .row_highlight_style(theme.selected)
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
        let mut state = TableState::default().with_selected(Some(self.selected[3]));
        StatefulWidget::render(table, area, buf, &mut state);
    }

    fn render_help(&self, area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        let keys = [
            ("Tab, Shift-Tab, 1-4", "switch view"),
            ("↑ ↓, j k, PgUp PgDn", "move the selection"),
            ("Enter", "open the area, site or alert"),
            ("Esc", "clear the filter, go up, close"),
            ("/", "filter rows (Enter keeps it)"),
            ("s", "sort by the next column"),
            ("a", "plan a shipment (Stock view)"),
            ("  Tab, ← →", "next field; change the level"),
            ("  Enter, Esc", "ask for a proposal; cancel"),
            ("?", "this help (any key closes)"),
            ("q, Ctrl-C", "quit"),
        ];
        let mut lines: Vec<Line> = keys
            .iter()
            .map(|(key, what)| {
                Line::from(vec![
                    Span::styled(format!(" {key:<21}"), theme.title),
                    Span::raw(*what),
                ])
            })
            .collect();
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            format!(
                " Sites under {} days of supply are marked LOW.",
                self.low_days()
            ),
            theme.dim,
        ));
        let width = 56.min(area.width);
        let height = (lines.len() as u16 + 2).min(area.height);
        let popup = Rect {
            x: area.x + (area.width - width) / 2,
            y: area.y + (area.height - height) / 2,
            width,
            height,
        };
        Clear.render(popup, buf);
        Paragraph::new(lines)
            .block(Block::bordered().title(Span::styled(" Keys ", theme.title)))
            .render(popup, buf);
    }
}

/// Status flags of an area row: `LOW`/`OUT`/`SILENT` for a site, counts for an area.
fn flags(row: &AreaRow, site_level: bool) -> String {
    if site_level {
        let mut parts = Vec::new();
        if row.out > 0 {
            parts.push("OUT");
        } else if row.low > 0 {
            parts.push("LOW");
        }
        if row.silent > 0 {
            parts.push("SILENT");
        }
        return parts.join(" ");
    }
    let mut parts = Vec::new();
    if row.low + row.out > 0 {
        parts.push(format!("{} low", row.low + row.out));
    }
    if row.silent > 0 {
        parts.push(format!("{} sil", row.silent));
    }
    parts.join(" ")
}

/// Splits `text` at spaces into at most `max_lines` lines of at most `width` characters; the
/// last line is cut with `…` if the text goes on.
pub fn wrap(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let needed = if current.is_empty() {
            text_width(word)
        } else {
            text_width(&current) + 1 + text_width(word)
        };
        if needed > width && !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    if lines.len() > max_lines {
        let rest = lines.split_off(max_lines - 1).join(" ");
        lines.push(fit(&rest, width));
    }
    lines.into_iter().map(|l| fit(&l, width)).collect()
}

/// Averages the per-second history into at most `width` bars, newest last. Returns the bars
/// (doses/s) and the seconds each covers.
pub fn bars(history: &[u64], width: usize) -> (Vec<f64>, usize) {
    if history.is_empty() || width == 0 {
        return (Vec::new(), 1);
    }
    let per_bar = history.len().div_ceil(width).max(1);
    let count = history.len() / per_bar;
    let start = history.len() - count * per_bar;
    let bars = history[start..]
        .chunks(per_bar)
        .map(|chunk| chunk.iter().sum::<u64>() as f64 / per_bar as f64)
        .collect();
    (bars, per_bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_the_rest() {
        assert_eq!(
            wrap("one two three four", 9, 3),
            ["one two", "three", "four"]
        );
        assert_eq!(
            wrap("one two three four five", 9, 2),
            ["one two", "three fo…"]
        );
        assert_eq!(wrap("", 9, 2), Vec::<String>::new());
    }

    #[test]
    fn bars_average_the_newest_seconds() {
        let history: Vec<u64> = (1..=10).collect();
        let (bars, per) = bars(&history, 4);
        assert_eq!(per, 3);
        // The oldest second that does not fill a bar is dropped.
        assert_eq!(bars, [3.0, 6.0, 9.0]);
        let (bars, per) = super::bars(&history, 20);
        assert_eq!(per, 1);
        assert_eq!(bars.len(), 10);
    }
}
