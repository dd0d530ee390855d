//! Fault injection: rules that make matching requests fail, stall, or lose their connection.
//!
//! A rule is a [`Fault`], the requests it applies to (statement kinds, optionally a table) and a
//! trigger (the next `n` matches, every `k`-th, a probability, or always). Rules are checked in
//! the order they were added for every request, after it has been parsed and recorded; delays
//! of all firing rules add up, and the first firing non-delay fault decides the answer.
//!
//! Driver-internal traffic (system tables, `USE`) and `PREPARE` are only matched by rules that
//! name [`StatementKind::System`] or [`StatementKind::Prepare`] explicitly, so that a rule meant
//! for the application's writes cannot break the driver's control connection by accident.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::WriteType;

/// What a request is, for matching fault rules and for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// `SELECT` on a user table.
    Read,
    /// `INSERT`, `UPDATE`, `DELETE` (conditional or not) sent alone.
    Write,
    /// A `BATCH` request, or `BEGIN BATCH ... APPLY BATCH` text.
    Batch,
    /// `CREATE`, `DROP`, `TRUNCATE`.
    Ddl,
    /// A `PREPARE` request.
    Prepare,
    /// Reads of `system*` tables and `USE`: the driver's own traffic.
    System,
}

impl StatementKind {
    fn is_user(self) -> bool {
        matches!(
            self,
            StatementKind::Read | StatementKind::Write | StatementKind::Batch | StatementKind::Ddl
        )
    }
}

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// A `WriteTimeout` error whose `write_type` follows the statement: `SIMPLE`, `CAS` for a
    /// conditional write, `COUNTER` for a counter update, `BATCH` / `UNLOGGED_BATCH` / `COUNTER`
    /// for batches. With `applied: true` the write is applied first: the ambiguous "timed out
    /// but written" case a real cluster produces.
    WriteTimeout { applied: bool },
    /// A `WriteTimeout` with an explicit `write_type` (for example [`WriteType::BatchLog`], the
    /// only type the driver's default retry policy retries).
    WriteTimeoutOfType {
        write_type: WriteType,
        applied: bool,
    },
    /// A `ReadTimeout`. The driver's default policy retries once when
    /// `received >= block_for && !data_present`.
    ReadTimeout {
        received: i32,
        block_for: i32,
        data_present: bool,
    },
    /// An `Unavailable` error.
    Unavailable { required: i32, alive: i32 },
    /// An `Overloaded` error (the default policy retries idempotent statements on another node;
    /// with one node the query plan is then exhausted and the error is returned).
    Overloaded,
    /// A server error (code 0x0000).
    ServerError,
    /// An `Invalid` error (0x2200): the server refuses the statement as it is, as for a
    /// missing table or a wrong type. No retry policy resends it.
    Invalid,
    /// An `Unauthorized` error (0x2100): the logged-in role may not run the statement (a
    /// permission revoked). No retry policy resends it.
    Unauthorized,
    /// Close the connection instead of answering. With `applied: true` the statement is
    /// executed first.
    DropConnection { applied: bool },
    /// Answer a `WriteTimeout` at once and hold the write until the test calls
    /// [`Faults::release_late_writes`]: the mutation was on its way to the replicas when the
    /// coordinator gave up, and it lands after the client has seen the failure and whatever
    /// the client did about it (a recovery read, a retry), exactly when the test says. For a
    /// read, the timeout alone.
    LateWrite,
    /// Answer normally, this much later.
    Delay(Duration),
}

/// When a rule fires among the requests it matches.
#[derive(Debug, Clone, PartialEq)]
enum Trigger {
    /// The next `n` matching requests.
    Times(u64),
    /// Every `k`-th matching request (the k-th, 2k-th, ...).
    Every(u64),
    /// Each matching request with this probability.
    Probability(f64),
    Always,
}

/// A fault rule, built with [`FaultRule::new`] and refined with the builder methods.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    fault: Fault,
    kinds: Vec<StatementKind>,
    table: Option<String>,
    trigger: Trigger,
}

impl FaultRule {
    /// A rule firing once, on the next read, write, batch or DDL statement.
    pub fn new(fault: Fault) -> FaultRule {
        FaultRule {
            fault,
            kinds: Vec::new(),
            table: None,
            trigger: Trigger::Times(1),
        }
    }

    /// Restricts the rule to this statement kind (call again to add more kinds).
    pub fn on(mut self, kind: StatementKind) -> FaultRule {
        self.kinds.push(kind);
        self
    }

    /// Restricts the rule to statements on this table (`"table"` or `"keyspace.table"`);
    /// a batch matches when any of its statements does.
    pub fn table(mut self, table: &str) -> FaultRule {
        self.table = Some(table.to_string());
        self
    }

    /// Fires on the next `n` matching requests.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.trigger = Trigger::Times(n);
        self
    }

    /// Fires on every `k`-th matching request.
    pub fn every(mut self, k: u64) -> FaultRule {
        self.trigger = Trigger::Every(k.max(1));
        self
    }

    /// Fires on each matching request with probability `p` (0.0 to 1.0).
    pub fn probability(mut self, p: f64) -> FaultRule {
        self.trigger = Trigger::Probability(p.clamp(0.0, 1.0));
        self
    }

    /// Fires on every matching request until removed.
    pub fn always(mut self) -> FaultRule {
        self.trigger = Trigger::Always;
        self
    }

    fn matches(&self, kind: StatementKind, tables: &[(String, String)]) -> bool {
        let kind_ok = if self.kinds.is_empty() {
            kind.is_user()
        } else {
            self.kinds.contains(&kind)
        };
        let table_ok = match &self.table {
            None => true,
            Some(want) => tables
                .iter()
                .any(|(ks, t)| t == want || format!("{ks}.{t}") == *want),
        };
        kind_ok && table_ok
    }
}

/// Identifies an added rule, to remove it or ask how often it fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

struct ActiveRule {
    id: RuleId,
    rule: FaultRule,
    /// Matching requests seen so far (drives `Every`).
    matched: u64,
    /// Times the rule fired.
    fired: u64,
}

/// A write held by [`Fault::LateWrite`]: applies it when called.
pub(crate) type HeldWrite = Box<dyn FnOnce() + Send>;

struct FaultState {
    rules: Mutex<Vec<ActiveRule>>,
    /// Writes answered with a timeout and not applied yet, in the order they arrived.
    held: Mutex<Vec<HeldWrite>>,
    next_id: AtomicU64,
    /// Bumped by [`Faults::drop_connections`]; every connection watches it and closes.
    drop_generation: watch::Sender<u64>,
}

/// The fault injection handle of a node (cheap to clone).
#[derive(Clone)]
pub struct Faults {
    state: Arc<FaultState>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("rules", &self.lock().len())
            .field("held_late_writes", &self.held_late_writes())
            .finish()
    }
}

/// What the rules decided for one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub delay: Duration,
    pub fault: Option<Fault>,
}

impl Faults {
    pub(crate) fn new() -> Faults {
        let (drop_generation, _) = watch::channel(0);
        Faults {
            state: Arc::new(FaultState {
                rules: Mutex::new(Vec::new()),
                held: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                drop_generation,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ActiveRule>> {
        self.state.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule; it applies to requests arriving from now on.
    pub fn add(&self, rule: FaultRule) -> RuleId {
        let id = RuleId(self.state.next_id.fetch_add(1, Ordering::Relaxed));
        self.lock().push(ActiveRule {
            id,
            rule,
            matched: 0,
            fired: 0,
        });
        id
    }

    /// The next `n` writes (single statements and batches) fail with `fault`.
    pub fn fail_writes(&self, n: u64, fault: Fault) -> RuleId {
        self.add(
            FaultRule::new(fault)
                .on(StatementKind::Write)
                .on(StatementKind::Batch)
                .times(n),
        )
    }

    /// The next `n` reads of user tables fail with `fault`.
    pub fn fail_reads(&self, n: u64, fault: Fault) -> RuleId {
        self.add(FaultRule::new(fault).on(StatementKind::Read).times(n))
    }

    /// Every read, write, batch and DDL statement is answered `latency` later, until removed.
    pub fn delay_all(&self, latency: Duration) -> RuleId {
        self.add(FaultRule::new(Fault::Delay(latency)).always())
    }

    /// Removes a rule.
    pub fn remove(&self, id: RuleId) {
        self.lock().retain(|r| r.id != id);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many times a rule fired (0 for an unknown or removed rule).
    pub fn fired(&self, id: RuleId) -> u64 {
        self.lock()
            .iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.fired)
    }

    /// Applies every write held by [`Fault::LateWrite`] now, in the order they arrived, before
    /// returning; returns how many there were. Held writes survive [`Faults::clear`]; those
    /// never released are dropped with the node.
    pub fn release_late_writes(&self) -> usize {
        let held = std::mem::take(&mut *self.held());
        let count = held.len();
        for write in held {
            write();
        }
        count
    }

    /// Writes held by [`Fault::LateWrite`] and not released yet.
    pub fn held_late_writes(&self) -> usize {
        self.held().len()
    }

    pub(crate) fn hold(&self, write: HeldWrite) {
        self.held().push(write);
    }

    fn held(&self) -> MutexGuard<'_, Vec<HeldWrite>> {
        self.state.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes every open client connection now (the listener stays open, so drivers reconnect).
    pub fn drop_connections(&self) {
        self.state.drop_generation.send_modify(|g| *g += 1);
    }

    pub(crate) fn drop_signal(&self) -> watch::Receiver<u64> {
        self.state.drop_generation.subscribe()
    }

    pub(crate) fn decide(&self, kind: StatementKind, tables: &[(String, String)]) -> Decision {
        let mut decision = Decision::default();
        let mut rules = self.lock();
        for active in rules.iter_mut() {
            if !active.rule.matches(kind, tables) {
                continue;
            }
            active.matched += 1;
            let fire = match active.rule.trigger {
                Trigger::Times(n) => active.fired < n,
                Trigger::Every(k) => active.matched % k == 0,
                Trigger::Probability(p) => rand::random::<f64>() < p,
                Trigger::Always => true,
            };
            if !fire {
                continue;
            }
            match &active.rule.fault {
                Fault::Delay(d) => {
                    active.fired += 1;
                    decision.delay += *d;
                }
                other if decision.fault.is_none() => {
                    active.fired += 1;
                    decision.fault = Some(other.clone());
                }
                // A fault already decides this request; this rule keeps its turn.
                _ => {}
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> Vec<(String, String)> {
        vec![("ks".to_string(), name.to_string())]
    }

    #[test]
    fn times_and_every_count_matching_requests_only() {
        let faults = Faults::new();
        let once = faults.fail_writes(1, Fault::Overloaded);
        let every = faults.add(
            FaultRule::new(Fault::ServerError)
                .on(StatementKind::Read)
                .table("b")
                .every(2),
        );
        assert!(faults.decide(StatementKind::Read, &t("a")).fault.is_none());
        assert_eq!(
            faults.decide(StatementKind::Write, &t("a")).fault,
            Some(Fault::Overloaded)
        );
        assert!(faults.decide(StatementKind::Write, &t("a")).fault.is_none());
        assert!(faults.decide(StatementKind::Read, &t("b")).fault.is_none());
        assert_eq!(
            faults.decide(StatementKind::Read, &t("b")).fault,
            Some(Fault::ServerError)
        );
        assert_eq!((faults.fired(once), faults.fired(every)), (1, 1));
        assert!(
            faults
                .decide(StatementKind::System, &t("local"))
                .fault
                .is_none()
        );
    }

    #[test]
    fn delays_add_up_alongside_a_fault() {
        let faults = Faults::new();
        faults.delay_all(Duration::from_millis(5));
        faults.add(FaultRule::new(Fault::Delay(Duration::from_millis(7))).always());
        faults.fail_reads(1, Fault::Overloaded);
        let d = faults.decide(StatementKind::Read, &t("a"));
        assert_eq!(d.delay, Duration::from_millis(12));
        assert_eq!(d.fault, Some(Fault::Overloaded));
    }
}
