//! The console's state and how events change it. Nothing here draws or does I/O: [`App::update`]
//! takes an [`Event`] (a key, a tick, something from the feed) and moves the state; `ui` draws
//! whatever the state is. Time arrives in events too, so the whole console is testable without
//! clocks.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::allocation::{AllocationAnswer, AllocationQuery, Level, PlanLine};
use crate::feed::{Alert, FeedEvent, SiteLive, Snapshot, district_key};
use crate::theme::Theme;

/// Everything that can happen to the console.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A key press.
    Key(KeyEvent),
    /// The terminal was resized: draw again.
    Resize,
    /// A second passed; `now` is unix seconds.
    Tick { now: i64 },
    /// The data feed reported something.
    Feed(FeedEvent),
    /// The answer to allocation request `id`: a proposal, or why there is none.
    Allocation {
        id: u64,
        answer: Result<Box<AllocationAnswer>, String>,
    },
}

/// The console's views, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Overview,
    Areas,
    Stock,
    Alerts,
}

impl View {
    pub const ALL: [View; 4] = [View::Overview, View::Areas, View::Stock, View::Alerts];

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Areas => "Areas",
            View::Stock => "Stock",
            View::Alerts => "Alerts",
        }
    }

    fn index(self) -> usize {
        match self {
            View::Overview => 0,
            View::Areas => 1,
            View::Stock => 2,
            View::Alerts => 3,
        }
    }

    fn next(self) -> View {
        View::ALL[(self.index() + 1) % View::ALL.len()]
    }

    fn previous(self) -> View {
        View::ALL[(self.index() + View::ALL.len() - 1) % View::ALL.len()]
    }
}

/// The state of the connection to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting {
        attempt: u32,
    },
    Live,
    Lost {
        error: String,
        /// Failed attempts in a row.
        failures: u32,
        /// Unix seconds of the next try.
        retry_at: i64,
    },
}

/// Columns the area table sorts by (`s` cycles them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortColumn {
    Name,
    Today,
    Rate,
    Share,
    Stock,
    Days,
}

impl SortColumn {
    const ORDER: [SortColumn; 6] = [
        SortColumn::Name,
        SortColumn::Today,
        SortColumn::Rate,
        SortColumn::Share,
        SortColumn::Stock,
        SortColumn::Days,
    ];

    fn next(self) -> SortColumn {
        let i = Self::ORDER.iter().position(|c| *c == self).unwrap_or(0);
        Self::ORDER[(i + 1) % Self::ORDER.len()]
    }

    pub fn label(self) -> &'static str {
        match self {
            SortColumn::Name => "name",
            SortColumn::Today => "doses today",
            SortColumn::Rate => "rate",
            SortColumn::Share => "share of target",
            SortColumn::Stock => "stock",
            SortColumn::Days => "days of supply",
        }
    }
}

/// Columns the stock table sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockSort {
    Days,
    Stock,
    Name,
}

impl StockSort {
    fn next(self) -> StockSort {
        match self {
            StockSort::Days => StockSort::Stock,
            StockSort::Stock => StockSort::Name,
            StockSort::Name => StockSort::Days,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            StockSort::Days => "days of supply",
            StockSort::Stock => "stock",
            StockSort::Name => "site",
        }
    }
}

/// Connected figures older than this many seconds (three refresh periods) are marked stale.
pub const STALE_AFTER_S: i64 = 3;

/// One row of the area table: a province, a district or a site, with its sites added up.
#[derive(Debug, Clone, PartialEq)]
pub struct AreaRow {
    /// The province or district code, or the site id: what Enter descends into.
    pub key: String,
    pub label: String,
    pub sites: usize,
    pub doses_today: u64,
    pub rate_per_s: f64,
    /// Sum of the sites' daily capacity: the day's target.
    pub capacity: u64,
    pub remaining: u64,
    pub uptake_per_day: Option<f64>,
    pub days_of_supply: Option<f64>,
    /// Sites under the low-stock threshold (or out of stock).
    pub low: usize,
    pub out: usize,
    pub silent: usize,
    /// Dose errors over the last minute at the sites of this row.
    pub errors_last_minute: u64,
}

impl AreaRow {
    fn empty(key: &str, label: String) -> Self {
        Self {
            key: key.to_owned(),
            label,
            sites: 0,
            doses_today: 0,
            rate_per_s: 0.0,
            capacity: 0,
            remaining: 0,
            uptake_per_day: None,
            days_of_supply: None,
            low: 0,
            out: 0,
            silent: 0,
            errors_last_minute: 0,
        }
    }

    fn add(&mut self, site: &SiteLive, low_days: f64) {
        self.sites += 1;
        self.doses_today += site.doses_today;
        self.rate_per_s += site.rate_per_s;
        self.capacity += u64::from(site.daily_capacity);
        self.remaining += site.remaining;
        if let Some(uptake) = site.uptake_per_day {
            *self.uptake_per_day.get_or_insert(0.0) += uptake;
        }
        if site.remaining == 0 {
            self.out += 1;
        } else if is_low(site.remaining, site.days_of_supply, low_days) {
            self.low += 1;
        }
        if site.silent {
            self.silent += 1;
        }
        self.errors_last_minute += site.errors_last_minute;
    }

    fn finish(&mut self) {
        self.days_of_supply = self
            .uptake_per_day
            .filter(|u| *u > 0.0)
            .map(|u| self.remaining as f64 / u);
    }
}

/// One row of the stock table: a product at a site.
#[derive(Debug, Clone, PartialEq)]
pub struct StockRow {
    pub site_id: String,
    pub site_name: String,
    pub product: String,
    pub remaining: u64,
    pub uptake_per_day: Option<f64>,
    pub days_of_supply: Option<f64>,
    pub low: bool,
}

/// Low stock: nothing left, or fewer days of supply than the threshold.
pub fn is_low(remaining: u64, days: Option<f64>, threshold: f64) -> bool {
    remaining == 0 || days.is_some_and(|d| d < threshold)
}

/// The fields of the shipment form, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentField {
    Product,
    Quantity,
    Level,
}

impl ShipmentField {
    fn next(self) -> ShipmentField {
        match self {
            ShipmentField::Product => ShipmentField::Quantity,
            ShipmentField::Quantity => ShipmentField::Level,
            ShipmentField::Level => ShipmentField::Product,
        }
    }

    fn previous(self) -> ShipmentField {
        match self {
            ShipmentField::Product => ShipmentField::Level,
            ShipmentField::Quantity => ShipmentField::Product,
            ShipmentField::Level => ShipmentField::Quantity,
        }
    }
}

/// The shipment being typed in the stock view (`a`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentForm {
    /// A product code, upper case as in the catalogue.
    pub product: String,
    /// Digits only.
    pub quantity: String,
    pub level: Level,
    pub field: ShipmentField,
    /// Why Enter did not send the request.
    pub error: Option<String>,
}

impl Default for ShipmentForm {
    fn default() -> Self {
        Self {
            product: String::new(),
            quantity: String::new(),
            level: Level::Site,
            field: ShipmentField::Product,
            error: None,
        }
    }
}

/// A province's or district's name from the snapshot, made ready once per snapshot: as shown
/// (on one line: the server's text may hold newlines or tabs, which would break a table row),
/// and folded for the filter and the name sort.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AreaName {
    shown: String,
    folded: String,
}

impl AreaName {
    /// `None` for a name that is blank once on one line: the area is then shown by its code.
    fn new(name: &str) -> Option<Self> {
        let shown = name
            .split_whitespace()
            .map(|word| word.chars().filter(|c| !c.is_control()).collect::<String>())
            .filter(|word| !word.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (!shown.is_empty()).then(|| Self {
            folded: fold(&shown),
            shown,
        })
    }
}

/// The allocation panel: nothing asked yet, waiting for the server, or its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Proposal {
    None,
    Loading {
        id: u64,
        query: AllocationQuery,
    },
    Ready {
        query: AllocationQuery,
        answer: Box<AllocationAnswer>,
    },
    Failed {
        query: AllocationQuery,
        message: String,
    },
}

impl Proposal {
    /// The request being waited for or answered.
    pub fn query(&self) -> Option<&AllocationQuery> {
        match self {
            Proposal::None => None,
            Proposal::Loading { query, .. }
            | Proposal::Ready { query, .. }
            | Proposal::Failed { query, .. } => Some(query),
        }
    }
}

/// The console.
#[derive(Debug, Clone)]
pub struct App {
    /// The server's URL, for messages.
    pub server: String,
    pub theme: Theme,
    pub snapshot: Option<Snapshot>,
    /// The snapshot's site names as the filter and the name sort compare them ([`fold`]), by
    /// site id: folded once per snapshot, not on every table drawn.
    folded_names: HashMap<String, String>,
    /// The snapshot's province and district names, by the same keys (`01`, `01/001`), ready
    /// to show and to compare: prepared once per snapshot.
    area_names: HashMap<String, AreaName>,
    pub connection: Connection,
    /// Unix seconds, from the last tick.
    pub now: i64,
    /// When (our clock, from the ticks) a snapshot newer than the one before last arrived.
    /// Measured on our clock rather than against the server's `generated_at`, so a skew between
    /// the two machines cannot make live figures look stale, nor stale ones live.
    pub fresh_at: i64,
    /// The last `event: error` of the server (it could not build a snapshot), until a snapshot
    /// comes again.
    pub server_error: Option<String>,
    pub view: View,
    /// The drill-down: `[]` nation, `[province]`, `[province, district]`,
    /// `[province, district, site]`.
    pub path: Vec<String>,
    /// The selected row in each view (Overview has none), as an index into the rows drawn.
    pub selected: [usize; 4],
    /// What the selected row is (an area code, a site and product, an alert), per view. Rows
    /// re-sort with every snapshot, so after each one the selection is found again by this key:
    /// the highlight stays on the same area rather than on the same line.
    selected_key: [Option<String>; 4],
    pub sort: SortColumn,
    pub stock_sort: StockSort,
    pub filter: String,
    pub editing_filter: bool,
    pub show_help: bool,
    /// `--low-stock-days`; otherwise the server's threshold.
    pub low_stock_days: Option<f64>,
    /// The shipment form, while it is open (`a` in the stock view).
    pub shipment: Option<ShipmentForm>,
    /// The last shipment sent, to fill the form in again.
    pub last_shipment: Option<ShipmentForm>,
    /// The allocation panel's content. While it is not `None`, it takes the place of the
    /// by-site table in the stock view.
    pub proposal: Proposal,
    /// The selected line of the proposal.
    pub proposal_selected: usize,
    /// A request the event loop has not started yet: taken by [`App::take_allocation_request`].
    pending_request: Option<(u64, AllocationQuery)>,
    /// Numbers the requests, so that a late answer to a replaced one is dropped.
    next_request_id: u64,
    pub quit: bool,
}

impl App {
    pub fn new(server: impl Into<String>, theme: Theme, now: i64) -> Self {
        Self {
            server: server.into(),
            theme,
            snapshot: None,
            folded_names: HashMap::new(),
            area_names: HashMap::new(),
            connection: Connection::Connecting { attempt: 1 },
            now,
            fresh_at: now,
            server_error: None,
            view: View::Overview,
            path: Vec::new(),
            selected: [0; 4],
            selected_key: [None, None, None, None],
            sort: SortColumn::Name,
            stock_sort: StockSort::Days,
            filter: String::new(),
            editing_filter: false,
            show_help: false,
            low_stock_days: None,
            shipment: None,
            last_shipment: None,
            proposal: Proposal::None,
            proposal_selected: 0,
            pending_request: None,
            next_request_id: 1,
            quit: false,
        }
    }

    /// The low-stock threshold in days.
    pub fn low_days(&self) -> f64 {
        self.low_stock_days.unwrap_or_else(|| {
            self.snapshot
                .as_ref()
                .map_or(3.0, |s| s.thresholds.low_stock_days)
        })
    }

    /// Seconds since the figures on screen last moved on (see [`App::fresh_at`]).
    pub fn data_age(&self) -> i64 {
        self.now - self.fresh_at
    }

    /// Connected, but no fresh snapshot for more than [`STALE_AFTER_S`] seconds: the figures
    /// on screen are frozen and must not pass for live ones.
    pub fn is_stale(&self) -> bool {
        self.connection == Connection::Live
            && self.snapshot.is_some()
            && self.data_age() > STALE_AFTER_S
    }

    /// Moves the state for one event.
    pub fn update(&mut self, event: Event) {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key),
            Event::Key(_) | Event::Resize => {}
            Event::Tick { now } => self.now = now,
            Event::Feed(FeedEvent::Snapshot(snapshot)) => {
                // The first snapshot of a connection is fresh whatever its time says (another
                // replica's clock may be behind the last one's).
                let newer = self.connection != Connection::Live
                    || self
                        .snapshot
                        .as_ref()
                        .is_none_or(|s| snapshot.generated_at > s.generated_at);
                if newer {
                    self.fresh_at = self.now;
                }
                self.folded_names = snapshot
                    .sites
                    .iter()
                    .map(|site| (site.site_id.clone(), fold(&site.name)))
                    .collect();
                self.area_names = snapshot
                    .area_names
                    .iter()
                    .filter_map(|(key, name)| Some((key.clone(), AreaName::new(name)?)))
                    .collect();
                self.snapshot = Some(*snapshot);
                self.connection = Connection::Live;
                self.server_error = None;
                self.find_selection();
            }
            Event::Feed(FeedEvent::ServerError(message)) => {
                self.server_error = Some(message);
            }
            Event::Feed(FeedEvent::Connecting { attempt }) => {
                self.connection = Connection::Connecting { attempt };
            }
            Event::Feed(FeedEvent::Lost {
                error,
                failures,
                retry_at,
            }) => {
                self.connection = Connection::Lost {
                    error,
                    failures,
                    retry_at,
                };
            }
            Event::Allocation { id, answer } => {
                let Proposal::Loading { id: waiting, query } = &self.proposal else {
                    return;
                };
                if *waiting != id {
                    return; // an answer to a request the user has replaced since
                }
                let query = query.clone();
                self.proposal_selected = 0;
                self.proposal = match answer {
                    Ok(answer) => Proposal::Ready { query, answer },
                    Err(message) => Proposal::Failed { query, message },
                };
            }
        }
    }

    /// The allocation request the user has just sent, once: the event loop runs it in the
    /// background and answers with [`Event::Allocation`] carrying the same id.
    pub fn take_allocation_request(&mut self) -> Option<(u64, AllocationQuery)> {
        self.pending_request.take()
    }

    /// Whether the allocation panel shows a proposal, an error or a wait (in the stock view it
    /// then takes the by-site table's place, and the selection keys move through its lines).
    pub fn proposal_open(&self) -> bool {
        self.proposal != Proposal::None
    }

    /// The proposal's lines, filtered: by area id, by the planner's name, and for districts
    /// and provinces by the name the snapshot gives the area.
    pub fn proposal_lines(&self) -> Vec<&PlanLine> {
        let needle = Needle::new(&self.filter);
        match &self.proposal {
            Proposal::Ready { answer, .. } => {
                let level = answer.plan.request.level;
                answer
                    .plan
                    .lines
                    .iter()
                    .filter(|l| {
                        needle.finds(&l.area)
                            || needle.finds(&l.name)
                            || (level != Level::Site
                                && self
                                    .area_names
                                    .get(&l.area)
                                    .is_some_and(|name| needle.finds_folded(&name.folded)))
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// What a line of the proposal is called on screen: a site by its name; a district or a
    /// province by the name the snapshot gives it (the planner's area ids, `01/001` and `01`,
    /// are the snapshot's keys); otherwise by the planner's area id.
    pub fn plan_line_label<'a>(&'a self, level: Level, line: &'a PlanLine) -> &'a str {
        match level {
            Level::Site if !line.name.is_empty() => &line.name,
            Level::Site => &line.area,
            Level::District | Level::Province => self.area_name(&line.area).unwrap_or(&line.area),
        }
    }

    /// Opens the shipment form: the last shipment again, or the selected row's product.
    fn open_shipment_form(&mut self) {
        let mut form = self.last_shipment.clone().unwrap_or_default();
        if form.product.is_empty()
            && let Some(row) = self.stock_rows().get(self.selected[View::Stock.index()])
        {
            form.product = row.product.clone();
        }
        form.field = if form.product.is_empty() {
            ShipmentField::Product
        } else {
            ShipmentField::Quantity
        };
        form.error = None;
        self.shipment = Some(form);
    }

    fn on_shipment_key(&mut self, key: KeyEvent) {
        let Some(form) = self.shipment.as_mut() else {
            return;
        };
        match key.code {
            KeyCode::Esc => {
                self.shipment = None;
                return;
            }
            KeyCode::Enter => {
                self.send_shipment();
                return;
            }
            KeyCode::Tab => form.field = form.field.next(),
            KeyCode::BackTab => form.field = form.field.previous(),
            KeyCode::Backspace => match form.field {
                ShipmentField::Product => {
                    form.product.pop();
                }
                ShipmentField::Quantity => {
                    form.quantity.pop();
                }
                ShipmentField::Level => form.level = form.level.previous(),
            },
            KeyCode::Left | KeyCode::Right | KeyCode::Char(' ')
                if form.field == ShipmentField::Level =>
            {
                form.level = if key.code == KeyCode::Left {
                    form.level.previous()
                } else {
                    form.level.next()
                };
            }
            KeyCode::Char(c) => match form.field {
                ShipmentField::Product
                    if (c.is_ascii_alphanumeric() || c == '-' || c == '_')
                        && form.product.len() < 32 =>
                {
                    form.product.push(c.to_ascii_uppercase());
                }
                ShipmentField::Quantity if c.is_ascii_digit() && form.quantity.len() < 12 => {
                    if form.quantity == "0" {
                        form.quantity.clear();
                    }
                    form.quantity.push(c);
                }
                // Quantities are often typed as 5,000 or 5_000.
                ShipmentField::Quantity if c == ',' || c == '_' || c == '.' => {}
                ShipmentField::Level => {
                    if let Some(level) = Level::ALL
                        .into_iter()
                        .find(|l| l.as_str().starts_with(c.to_ascii_lowercase()))
                    {
                        form.level = level;
                    }
                }
                _ => {}
            },
            _ => {}
        }
        form.error = None;
    }

    /// Checks the form and, if it is complete, asks for a proposal.
    fn send_shipment(&mut self) {
        let Some(form) = self.shipment.as_mut() else {
            return;
        };
        if form.product.is_empty() {
            form.error = Some("type a product code, e.g. COMIRNATY".into());
            form.field = ShipmentField::Product;
            return;
        }
        let Ok(quantity) = form.quantity.parse::<u64>() else {
            form.error = Some("type the number of doses in the shipment".into());
            form.field = ShipmentField::Quantity;
            return;
        };
        let query = AllocationQuery {
            product: form.product.clone(),
            quantity,
            level: form.level,
        };
        self.last_shipment = self.shipment.take();
        // The filter was for the by-site table the proposal replaces.
        self.filter.clear();
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.pending_request = Some((id, query.clone()));
        self.proposal = Proposal::Loading { id, query };
        self.proposal_selected = 0;
    }

    fn on_key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.shipment.is_some() {
            self.on_shipment_key(key);
            return;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if self.filter.chars().count() < 40 => self.filter.push(c),
                _ => {}
            }
            self.selected[self.view.index()] = 0;
            self.remember_selection();
            self.proposal_selected = 0;
            return;
        }
        if self.show_help {
            match key.code {
                KeyCode::Char('q') => self.quit = true,
                _ => self.show_help = false,
            }
            return;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.show_help = true,
            KeyCode::Tab => self.switch_view(self.view.next()),
            KeyCode::BackTab => self.switch_view(self.view.previous()),
            KeyCode::Char('1') => self.switch_view(View::Overview),
            KeyCode::Char('2') => self.switch_view(View::Areas),
            KeyCode::Char('3') => self.switch_view(View::Stock),
            KeyCode::Char('4') => self.switch_view(View::Alerts),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(i64::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(i64::MAX / 2),
            KeyCode::Enter => self.enter(),
            KeyCode::Esc => self.back(),
            KeyCode::Char('/') if self.view != View::Overview => {
                self.editing_filter = true;
            }
            KeyCode::Char('a') if self.view == View::Stock => self.open_shipment_form(),
            KeyCode::Char('s') => {
                match self.view {
                    View::Areas => self.sort = self.sort.next(),
                    View::Stock => self.stock_sort = self.stock_sort.next(),
                    View::Overview | View::Alerts => {}
                }
                // The same row stays selected wherever the new order puts it.
                self.find_selection();
            }
            _ => {}
        }
    }

    fn switch_view(&mut self, view: View) {
        if view != self.view {
            self.filter.clear();
            self.view = view;
            self.find_selection();
        }
    }

    /// Rows in the current view, for moving the selection.
    fn row_count(&self) -> usize {
        match self.view {
            View::Overview => 0,
            View::Areas if self.path.len() >= 3 => 0,
            View::Areas => self.area_rows().len(),
            View::Stock if self.proposal_open() => self.proposal_lines().len(),
            View::Stock => self.stock_rows().len(),
            View::Alerts => self.alerts().len(),
        }
    }

    fn move_selection(&mut self, by: i64) {
        let count = self.row_count();
        let proposal = self.view == View::Stock && self.proposal_open();
        let slot = if proposal {
            &mut self.proposal_selected
        } else {
            &mut self.selected[self.view.index()]
        };
        if count == 0 {
            *slot = 0;
        } else {
            let next = (*slot as i64).saturating_add(by).clamp(0, count as i64 - 1);
            *slot = next as usize;
        }
        if !proposal {
            self.remember_selection();
        }
    }

    /// What each row of the current view is, in the order drawn: an area code, a site and
    /// product, an alert. Empty where the view has no selectable rows that a snapshot moves
    /// (the overview, a site's page, a proposal's lines).
    fn row_keys(&self) -> Vec<String> {
        match self.view {
            View::Areas if self.path.len() < 3 => {
                self.area_rows().into_iter().map(|row| row.key).collect()
            }
            View::Stock if !self.proposal_open() => self
                .stock_rows()
                .into_iter()
                .map(|row| format!("{}\u{0}{}", row.site_id, row.product))
                .collect(),
            View::Alerts => self.alerts().into_iter().map(alert_key).collect(),
            View::Overview | View::Areas | View::Stock => Vec::new(),
        }
    }

    /// Notes which row is selected in the current view, after the user moved the selection.
    fn remember_selection(&mut self) {
        let i = self.view.index();
        self.selected_key[i] = self.row_keys().get(self.selected[i]).cloned();
    }

    /// Finds the selected row again after the rows changed (a snapshot, a new sort order, a
    /// view switched back to): by its key where it is still there, else the nearest line, which
    /// then becomes the selection.
    fn find_selection(&mut self) {
        let keys = self.row_keys();
        let i = self.view.index();
        match self.selected_key[i]
            .as_ref()
            .and_then(|key| keys.iter().position(|k| k == key))
        {
            Some(found) => self.selected[i] = found,
            None => {
                self.selected[i] = self.selected[i].min(keys.len().saturating_sub(1));
                self.selected_key[i] = keys.get(self.selected[i]).cloned();
            }
        }
    }

    fn enter(&mut self) {
        match self.view {
            View::Areas if self.path.len() < 3 => {
                let rows = self.area_rows();
                if let Some(row) = rows.get(self.selected[View::Areas.index()]) {
                    self.path.push(row.key.clone());
                    self.filter.clear();
                    self.selected[View::Areas.index()] = 0;
                    self.remember_selection();
                }
            }
            View::Alerts => {
                let target = self
                    .alerts()
                    .get(self.selected[View::Alerts.index()])
                    .and_then(|a| a.site_id.clone())
                    .and_then(|id| self.site(&id).cloned());
                if let Some(site) = target {
                    self.path = vec![site.province, site.district, site.site_id];
                    self.filter.clear();
                    self.view = View::Areas;
                }
            }
            View::Stock if self.proposal_open() => {}
            View::Stock => {
                let target = self
                    .stock_rows()
                    .get(self.selected[View::Stock.index()])
                    .and_then(|row| self.site(&row.site_id).cloned());
                if let Some(site) = target {
                    self.path = vec![site.province, site.district, site.site_id];
                    self.filter.clear();
                    self.view = View::Areas;
                }
            }
            View::Overview | View::Areas => {}
        }
    }

    fn back(&mut self) {
        if !self.filter.is_empty() {
            self.filter.clear();
            return;
        }
        if self.view == View::Stock && self.proposal_open() {
            // Closing the panel drops the request too: its answer, if it comes, is ignored.
            self.proposal = Proposal::None;
            self.proposal_selected = 0;
            return;
        }
        // The stock view follows the drill-down, so Esc goes up a level there too.
        if matches!(self.view, View::Areas | View::Stock)
            && let Some(left) = self.path.pop()
        {
            // In the areas, select the row we came from.
            if self.view == View::Areas {
                let rows = self.area_rows();
                self.selected[View::Areas.index()] =
                    rows.iter().position(|r| r.key == left).unwrap_or(0);
            }
            self.remember_selection();
        }
    }

    pub fn site(&self, site_id: &str) -> Option<&SiteLive> {
        self.snapshot
            .as_ref()?
            .sites
            .iter()
            .find(|s| s.site_id == site_id)
    }

    /// The sites inside the current drill-down path.
    pub fn sites_in_scope(&self) -> Vec<&SiteLive> {
        self.sites_under(&self.path)
    }

    fn sites_under(&self, path: &[String]) -> Vec<&SiteLive> {
        let Some(snapshot) = &self.snapshot else {
            return Vec::new();
        };
        snapshot
            .sites
            .iter()
            .filter(|s| {
                path.first().is_none_or(|p| *p == s.province)
                    && path.get(1).is_none_or(|d| *d == s.district)
                    && path.get(2).is_none_or(|id| *id == s.site_id)
            })
            .collect()
    }

    /// The name of site `site_id` as the filter and the name sort compare it: folded once per
    /// snapshot, or now for a name the snapshot does not have.
    fn folded_name<'a>(&'a self, site_id: &str, name: &str) -> Cow<'a, str> {
        match self.folded_names.get(site_id) {
            Some(folded) => Cow::Borrowed(folded),
            None => Cow::Owned(fold(name)),
        }
    }

    /// An area's name by its key in [`Snapshot::area_names`] (`01`, `01/001`), on one line;
    /// `None` when the server has no name for it.
    pub fn area_name(&self, key: &str) -> Option<&str> {
        self.area_names.get(key).map(|name| name.shown.as_str())
    }

    /// The name of a province, when the server has one.
    pub fn province_name(&self, province: &str) -> Option<&str> {
        self.area_name(province)
    }

    /// The name of district `district` of `province`, when the server has one.
    pub fn district_name(&self, province: &str, district: &str) -> Option<&str> {
        self.area_name(&district_key(province, district))
    }

    /// What a row of the area table is called: a province or district by its name when the
    /// server has one, else by its code ("Province 01", "District 001"); a site by its name.
    fn row_label(&self, site: &SiteLive, depth: usize) -> String {
        match depth {
            0 => self
                .province_name(&site.province)
                .map_or_else(|| format!("Province {}", site.province), str::to_owned),
            1 => self
                .district_name(&site.province, &site.district)
                .map_or_else(|| format!("District {}", site.district), str::to_owned),
            _ => site.name.clone(),
        }
    }

    /// A row's label as the filter and the name sort compare it (see [`fold`]): names folded
    /// once per snapshot; a label made from a code ("Province 79") folded now.
    fn folded_label<'a>(&'a self, path: &[String], row: &AreaRow) -> Cow<'a, str> {
        let named = match path {
            [] => self.area_names.get(&row.key),
            [province] => self.area_names.get(&district_key(province, &row.key)),
            _ => return self.folded_name(&row.key, &row.label),
        };
        match named {
            Some(name) => Cow::Borrowed(&name.folded),
            None => Cow::Owned(fold(&row.label)),
        }
    }

    /// The area table at the current level: provinces, districts of a province, or sites of a
    /// district; filtered and sorted.
    pub fn area_rows(&self) -> Vec<AreaRow> {
        self.rows_for(&self.path, self.sort, &self.filter)
    }

    /// Provinces, busiest first, for the overview.
    pub fn province_rows(&self) -> Vec<AreaRow> {
        self.rows_for(&[], SortColumn::Today, "")
    }

    fn rows_for(&self, path: &[String], sort: SortColumn, filter: &str) -> Vec<AreaRow> {
        let low_days = self.low_days();
        let depth = path.len();
        let needle = Needle::new(filter);
        let mut groups: BTreeMap<&str, AreaRow> = BTreeMap::new();
        for site in self.sites_under(path) {
            let key = match depth {
                0 => &site.province,
                1 => &site.district,
                _ => &site.site_id,
            };
            groups
                .entry(key)
                .or_insert_with(|| AreaRow::empty(key, self.row_label(site, depth)))
                .add(site, low_days);
        }
        // Each row with its label folded, which the filter and the name sort compare: a row is
        // found by its code or by its name, typed with or without accents.
        let mut rows: Vec<(AreaRow, Cow<'_, str>)> = groups
            .into_values()
            .map(|mut row| {
                row.finish();
                let folded = self.folded_label(path, &row);
                (row, folded)
            })
            .filter(|(row, folded)| needle.finds(&row.key) || needle.finds_folded(folded))
            .collect();
        let share = |r: &AreaRow| {
            if r.capacity == 0 {
                0.0
            } else {
                r.doses_today as f64 / r.capacity as f64
            }
        };
        rows.sort_by(|(a, folded_a), (b, folded_b)| {
            let by = match sort {
                // Names compare without their diacritics, so "Đà Nẵng" sorts with the Ds, not
                // after Z; an unnamed area's "Province 79" sorts with the Ps, as it reads.
                SortColumn::Name => folded_a.cmp(folded_b).then_with(|| a.label.cmp(&b.label)),
                SortColumn::Today => b.doses_today.cmp(&a.doses_today),
                SortColumn::Rate => b.rate_per_s.total_cmp(&a.rate_per_s),
                SortColumn::Share => share(b).total_cmp(&share(a)),
                SortColumn::Stock => b.remaining.cmp(&a.remaining),
                SortColumn::Days => days_ascending(a.days_of_supply, b.days_of_supply),
            };
            by.then_with(|| a.key.cmp(&b.key))
        });
        rows.into_iter().map(|(row, _)| row).collect()
    }

    /// Stock by product at each site in scope; filtered and sorted.
    pub fn stock_rows(&self) -> Vec<StockRow> {
        let low_days = self.low_days();
        let needle = Needle::new(&self.filter);
        let mut rows: Vec<StockRow> = self
            .sites_in_scope()
            .into_iter()
            .flat_map(|site| {
                site.stock.iter().map(move |p| StockRow {
                    site_id: site.site_id.clone(),
                    site_name: site.name.clone(),
                    product: p.product.clone(),
                    remaining: p.remaining,
                    uptake_per_day: p.uptake_per_day,
                    days_of_supply: p.days_of_supply,
                    low: is_low(p.remaining, p.days_of_supply, low_days),
                })
            })
            .filter(|row| {
                needle.finds(&row.site_id)
                    || needle.finds(&row.product)
                    || needle.finds_folded(&self.folded_name(&row.site_id, &row.site_name))
            })
            .collect();
        rows.sort_by(|a, b| {
            let by = match self.stock_sort {
                StockSort::Days => b
                    .low
                    .cmp(&a.low)
                    .then_with(|| days_ascending(a.days_of_supply, b.days_of_supply)),
                StockSort::Stock => a.remaining.cmp(&b.remaining),
                StockSort::Name => self
                    .folded_name(&a.site_id, &a.site_name)
                    .cmp(&self.folded_name(&b.site_id, &b.site_name))
                    .then_with(|| a.site_name.cmp(&b.site_name)),
            };
            by.then_with(|| a.site_id.cmp(&b.site_id))
                .then_with(|| a.product.cmp(&b.product))
        });
        rows
    }

    /// The server's alerts, filtered.
    pub fn alerts(&self) -> Vec<&Alert> {
        let needle = Needle::new(&self.filter);
        self.snapshot
            .as_ref()
            .map(|s| {
                s.alerts
                    .iter()
                    .filter(|a| {
                        needle.finds(&a.kind)
                            || needle.finds(&a.message)
                            || a.site_id.as_deref().is_some_and(|id| needle.finds(id))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The filter as typed, folded once for a whole table: a substring match ignoring case and
/// diacritics ("bach mai" finds "Bạch Mai", "da nang" finds "Đà Nẵng"); empty matches all.
struct Needle(String);

impl Needle {
    fn new(filter: &str) -> Self {
        Self(fold(filter))
    }

    /// Whether `text` contains the filter.
    fn finds(&self, text: &str) -> bool {
        if self.0.is_empty() {
            true
        } else if text.is_ascii() {
            // Folding ASCII only lower-cases it (and the folded filter is ASCII): compare in
            // place rather than fold a copy. Codes, ids and most names take this way.
            text.as_bytes()
                .windows(self.0.len())
                .any(|window| window.eq_ignore_ascii_case(self.0.as_bytes()))
        } else {
            fold(text).contains(&self.0)
        }
    }

    /// Whether `folded`, a text already folded, contains the filter.
    fn finds_folded(&self, folded: &str) -> bool {
        folded.contains(&self.0)
    }
}

/// Text as compared by the filter and the name sort: diacritics removed (`Đ` → `d`, `ạ` → `a`,
/// precomposed or with combining marks), lower case.
pub fn fold(text: &str) -> String {
    deunicode::deunicode(text).to_lowercase()
}

/// What identifies an alert across snapshots: its kind, site and shard. Never its message,
/// whose figures change every second ("43 dose errors", "analytics 12 s behind").
fn alert_key(alert: &Alert) -> String {
    // A server older than the `shard` field names the queue's shard first in its message.
    let shard = alert.shard.or_else(|| {
        (alert.kind == "queue_near_full")
            .then(|| {
                alert
                    .message
                    .strip_prefix("shard ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .flatten()
    });
    format!(
        "{}\u{0}{}\u{0}{}",
        alert.kind,
        alert.site_id.as_deref().unwrap_or(""),
        shard.map(|s| s.to_string()).unwrap_or_default()
    )
}

/// Fewest days first; unknown last.
fn days_ascending(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter ignores case and diacritics on both sides, whether a text takes the ASCII
    /// way (compared in place) or is folded.
    #[test]
    fn the_filter_ignores_case_and_diacritics() {
        let bach = Needle::new("bach mai");
        assert!(bach.finds("Bạch Mai"));
        assert!(bach.finds("BACH MAI hospital"));
        assert!(!bach.finds("Bach"), "longer than the text");
        let da = Needle::new("ĐÀ");
        assert!(da.finds("Đà Nẵng") && da.finds("Da Nang") && da.finds("hn-da"));
        assert!(!da.finds("Hà Nội"));
        assert!(da.finds_folded(&fold("Đà Nẵng")));
        let empty = Needle::new("");
        assert!(empty.finds("") && empty.finds("Bạch Mai") && empty.finds_folded(""));
    }

    /// An area name is put on one line (the server's text may hold line breaks, tabs, other
    /// control characters), folded for the filter, and dropped when nothing is left of it.
    #[test]
    fn area_names_are_made_one_line_and_blank_ones_dropped() {
        let name = AreaName::new("  Quận\n1\t(trung\u{1b}tâm)  ");
        assert_eq!(
            name,
            Some(AreaName {
                shown: "Quận 1 (trungtâm)".into(),
                folded: "quan 1 (trungtam)".into(),
            })
        );
        assert_eq!(AreaName::new(" \n\t "), None);
        assert_eq!(AreaName::new("\u{7}"), None);
        assert_eq!(AreaName::new(""), None);
    }
}
