//! The ScyllaDB backend against the in-process CQL test node (`cqlnode`), with the real driver.
//!
//! Run: `cargo test -p vaxcamp-store --features scylla,conformance --test scylla`.
//!
//! Against a real cluster instead: set `VAXCAMP_SCYLLA_NODES=host:9042,host2:9042` (and
//! `VAXCAMP_SCYLLA_RF=1` for a single node; default 3; `VAXCAMP_SCYLLA_DC` to name the
//! datacenter; `VAXCAMP_SCYLLA_USER` and `VAXCAMP_SCYLLA_PASSWORD` for a cluster with
//! authentication; `VAXCAMP_SCYLLA_TLS=true` and `VAXCAMP_SCYLLA_TLS_CA_FILE` for TLS). Every
//! store gets its own keyspace, `vaxcamp_t<pid>_<time>_<n>`, left behind for inspection (drop
//! them with `DROP KEYSPACE`). The tests that need the test node (fault injection, its request
//! log) say on stderr that they are skipped, and why, and return: a real cluster cannot inject
//! faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use vaxcamp_store::conformance::{
    run_all, sample_dose, sample_registration, scylla_cluster_from_env,
};
use vaxcamp_store::{ScyllaConfig, ScyllaStore, Store, StoreError, shard_of};

static KEYSPACES: AtomicU32 = AtomicU32::new(0);

fn unique_keyspace_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "vaxcamp_t{}_{}_{}",
        std::process::id(),
        secs,
        KEYSPACES.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where the tests run: the test node (kept alive for the test) or a real cluster.
struct Target {
    base: ScyllaConfig,
    node: Option<cqlnode::CqlNode>,
}

async fn target() -> Target {
    if let Some(base) = scylla_cluster_from_env(ScyllaConfig::default()) {
        return Target { base, node: None };
    }
    let node = cqlnode::CqlNode::start(cqlnode::NodeConfig::default())
        .await
        .expect("start the CQL test node");
    let base = ScyllaConfig {
        nodes: vec![node.addr().to_string()],
        replication_factor: 1,
        ..ScyllaConfig::default()
    };
    Target {
        base,
        node: Some(node),
    }
}

impl Target {
    /// The CQL test node, for a test that needs its fault injection or its inspection; `None`
    /// against a real cluster, after saying on stderr that the test is skipped and why.
    fn node_or_skip(&self, test: &str) -> Option<&cqlnode::CqlNode> {
        if self.node.is_none() {
            eprintln!(
                "SKIPPED {test}: it needs the CQL test node (fault injection or its request log), and VAXCAMP_SCYLLA_NODES points at a real cluster, where faults cannot be injected"
            );
        }
        self.node.as_ref()
    }

    /// A config for a fresh keyspace: small shard and bucket counts keep the tests quick.
    fn fresh(&self) -> ScyllaConfig {
        ScyllaConfig {
            keyspace: unique_keyspace_name(),
            shards: 4,
            people_buckets: 16,
            max_in_flight_per_shard: 32,
            request_timeout: Duration::from_secs(2),
            ..self.base.clone()
        }
    }
}

async fn connect(config: ScyllaConfig) -> ScyllaStore {
    ScyllaStore::connect(config).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let target = target().await;
    let target = &target;
    run_all(|| async move { Arc::new(connect(target.fresh()).await) as Arc<dyn Store> }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_the_default_bucket_count() {
    // 256 buckets, as in production: `people` merges them all.
    let target = target().await;
    let config = ScyllaConfig {
        people_buckets: 256,
        ..target.fresh()
    };
    let store = connect(config).await;
    let batch: Vec<_> = (0..50).map(sample_registration).collect();
    store.import_registrations(&batch).await.expect("import");
    let page = store.people(None, 20).await.expect("people");
    let codes: Vec<_> = page.iter().map(|r| r.person_code.clone()).collect();
    let expected: Vec<_> = batch
        .iter()
        .take(20)
        .map(|r| r.person_code.clone())
        .collect();
    assert_eq!(codes, expected);
    assert_eq!(store.backend_name(), "scylla");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_checks_the_shard_count() {
    let target = target().await;
    let config = target.fresh();
    let store = connect(config.clone()).await;
    let person = sample_registration(1).person_code;
    let dose = sample_dose(&person, 1);
    store
        .commit_doses(shard_of(&person, 4), std::slice::from_ref(&dose))
        .await
        .expect("commit");
    drop(store);

    let other = ScyllaConfig {
        shards: 5,
        ..config.clone()
    };
    match ScyllaStore::connect(other).await {
        Err(StoreError::Engine(message)) => {
            assert!(message.contains("shards"), "{message}")
        }
        other => panic!("expected a shard count refusal, got {other:?}"),
    }
    let reopened = connect(config).await;
    assert_eq!(reopened.totals().await.expect("totals").doses, 1);
    assert_eq!(
        reopened.find_doses(&[dose.dose_id]).await.expect("find"),
        vec![dose]
    );
}

#[test]
fn the_configurations_debug_output_hides_the_password() {
    let config = ScyllaConfig {
        username: Some("vaxcamp".into()),
        password: Some("scylla-secret-123".into()),
        ..ScyllaConfig::default()
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains("scylla-secret-123"), "{shown}");
    assert!(
        shown.contains("<redacted>") && shown.contains("vaxcamp"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_is_refused_before_connecting() {
    let bad = ScyllaConfig {
        keyspace: "no spaces; please".into(),
        ..ScyllaConfig::default()
    };
    assert!(matches!(
        ScyllaStore::connect(bad).await,
        Err(StoreError::Engine(_))
    ));
    let ca_without_tls = ScyllaConfig {
        tls_ca_file: Some("/etc/scylla/ca.pem".into()),
        ..ScyllaConfig::default()
    };
    match ScyllaStore::connect(ca_without_tls).await {
        Err(StoreError::Engine(message)) => {
            assert!(message.contains("TLS is off"), "{message}")
        }
        other => panic!("expected a CA file without TLS to be refused, got {other:?}"),
    }
    // TLS itself: tests/scylla_tls.rs. (The tests always build with `scylla-tls`, see
    // Cargo.toml, so the refusal of `tls: true` by a build without it is not reachable here.)
}

// The settings every request carries, as the node saw them.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_prepared_and_carry_the_configured_consistency() {
    use cqlnode::Consistency as Seen;
    use vaxcamp_store::scylla::{Consistency, SerialConsistency};
    let target = target().await;
    let Some(node) =
        target.node_or_skip("requests_are_prepared_and_carry_the_configured_consistency")
    else {
        return;
    };
    for (write, read, serial, expected) in [
        // The defaults.
        (
            None,
            None,
            None,
            (Seen::LocalQuorum, Seen::LocalQuorum, Seen::LocalSerial),
        ),
        // Other values, configured.
        (
            Some(Consistency::One),
            Some(Consistency::All),
            Some(SerialConsistency::Serial),
            (Seen::One, Seen::All, Seen::Serial),
        ),
    ] {
        let defaults = target.fresh();
        let config = ScyllaConfig {
            write_consistency: write.unwrap_or(defaults.write_consistency),
            read_consistency: read.unwrap_or(defaults.read_consistency),
            serial_consistency: serial.unwrap_or(defaults.serial_consistency),
            ..defaults
        };
        let store = connect(config.clone()).await;
        node.clear_requests();
        // A short flow: registrations, doses (journal, claim, rows, totals), the reads a
        // check-in and a retry make.
        let people: Vec<_> = (0..8).map(sample_registration).collect();
        store.import_registrations(&people).await.expect("import");
        store
            .register(&sample_registration(9))
            .await
            .expect("register");
        for (shard, doses) in dose_batches(0..8, store.shard_count(), 100) {
            store.commit_doses(shard, &doses).await.expect("commit");
            let ids: Vec<_> = doses.iter().map(|d| d.dose_id).collect();
            assert_eq!(
                store.find_doses(&ids).await.expect("find").len(),
                doses.len()
            );
        }
        store.person(&people[0].person_code).await.expect("person");
        store
            .doses_of(&people[0].person_code)
            .await
            .expect("doses_of");

        let (write, read, serial) = expected;
        let ours: Vec<cqlnode::RequestRecord> = node
            .requests()
            .into_iter()
            .filter(|r| r.tables.iter().any(|(ks, _)| *ks == config.keyspace))
            .filter(|r| r.kind != StatementKind::Prepare)
            .collect();
        let mut seen = std::collections::BTreeMap::<&str, usize>::new();
        for request in &ours {
            let what = format!("{:?} {}", request.kind, request.statement);
            assert!(request.prepared, "sent as QUERY text, not EXECUTE: {what}");
            let lwt = request.statement.contains(" IF ");
            let lease_read = request.kind == StatementKind::Read
                && request.tables.iter().any(|(_, t)| t == "writer_lease");
            let (kind, consistency) = match request.kind {
                // The lease is read linearizably, at the serial level.
                StatementKind::Read if lease_read => ("lease read", serial),
                StatementKind::Read => ("read", read),
                StatementKind::Write if lwt => ("LWT", write),
                StatementKind::Write => ("write", write),
                StatementKind::Batch => ("batch", write),
                other => panic!("unexpected {other:?}: {what}"),
            };
            assert_eq!(request.consistency, Some(consistency), "{what}");
            if lwt {
                assert_eq!(request.serial_consistency, Some(serial), "{what}");
            }
            *seen.entry(kind).or_default() += 1;
        }
        for kind in ["read", "write", "LWT", "batch"] {
            assert!(
                seen.get(kind).copied().unwrap_or(0) > 0,
                "no {kind} seen: {seen:?}"
            );
        }
    }

    // Idempotent statements are resent by the driver after a timeout (the protocol does not
    // carry the flag; the resend shows it): one injected timeout, the same INSERT twice in the
    // log, and the commit goes through.
    let store = connect(target.fresh()).await;
    let (shard, doses) = dose_batches(0..1, store.shard_count(), 1)
        .into_iter()
        .next()
        .expect("a dose");
    node.clear_requests();
    let rule = node.faults().add(
        FaultRule::new(Fault::WriteTimeout { applied: false })
            .on(StatementKind::Write)
            .table("doses_by_person"),
    );
    store.commit_doses(shard, &doses).await.expect("commit");
    assert_eq!(node.faults().fired(rule), 1);
    let sends = node
        .requests()
        .into_iter()
        .filter(|r| r.kind == StatementKind::Write)
        .filter(|r| r.tables.iter().any(|(_, t)| t == "doses_by_person"))
        .count();
    assert_eq!(sends, 2, "the timed-out write was resent once");
}

// Tablets: ScyllaDB 6 refuses LWTs in tablet keyspaces, and gives new keyspaces tablets.

/// A short flow that needs LWTs: a registration (claim) and a dose (claim).
async fn register_and_commit(store: &ScyllaStore) {
    let person = sample_registration(1);
    store.register(&person).await.expect("register (an LWT)");
    let dose = sample_dose(&person.person_code, 1);
    store
        .commit_doses(
            shard_of(&person.person_code, store.shard_count()),
            std::slice::from_ref(&dose),
        )
        .await
        .expect("commit (an LWT claim)");
    assert_eq!(store.totals().await.expect("totals").doses, 1);
}

/// The `CREATE KEYSPACE` statements the node saw for `keyspace`.
fn keyspace_ddl(node: &cqlnode::CqlNode, keyspace: &str) -> Vec<String> {
    node.requests()
        .into_iter()
        .filter(|r| r.statement.starts_with("CREATE KEYSPACE") && r.statement.contains(keyspace))
        .map(|r| r.statement)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyspace_is_created_without_tablets_where_the_server_knows_them() {
    let target = target().await;
    let Some(node) = target.node_or_skip("the_keyspace_is_created_without_tablets") else {
        return;
    };
    let config = target.fresh();
    let store = connect(config.clone()).await;
    register_and_commit(&store).await;
    let ddl = keyspace_ddl(node, &config.keyspace);
    assert_eq!(ddl.len(), 1, "{ddl:?}");
    assert!(
        ddl[0].ends_with("AND tablets = {'enabled': false}"),
        "{ddl:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_know_tablets_gets_the_keyspace_without_the_option() {
    // Cassandra and ScyllaDB before 6.0 refuse the option: the store asks again without it.
    let node = cqlnode::CqlNode::start(cqlnode::NodeConfig::default().without_tablets())
        .await
        .expect("start the CQL test node");
    let config = ScyllaConfig {
        nodes: vec![node.addr().to_string()],
        replication_factor: 1,
        ..Target {
            base: ScyllaConfig::default(),
            node: None,
        }
        .fresh()
    };
    let store = connect(config.clone()).await;
    register_and_commit(&store).await;
    let ddl = keyspace_ddl(&node, &config.keyspace);
    assert_eq!(ddl.len(), 2, "{ddl:?}");
    assert!(ddl[0].contains("tablets"), "{ddl:?}");
    assert!(!ddl[1].contains("tablets"), "{ddl:?}");
    // Reconnecting to the existing keyspace works the same way.
    drop(store);
    let again = connect(config).await;
    assert_eq!(again.totals().await.expect("totals").doses, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_keyspace_with_tablets_is_refused_at_start_up_saying_what_to_do() {
    let target = target().await;
    let Some(node) = target.node_or_skip("an_existing_keyspace_with_tablets_is_refused") else {
        return;
    };
    let config = target.fresh();
    // Made by hand (or by an older vaxcamp) on ScyllaDB 6: tablets by default.
    node.execute(
        None,
        &format!(
            "CREATE KEYSPACE {} WITH replication = {{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}}",
            config.keyspace
        ),
    )
    .expect("create the keyspace");
    match ScyllaStore::connect(config.clone()).await {
        Err(StoreError::Engine(message)) => {
            for needle in [
                "uses tablets",
                "lightweight transactions",
                "DROP KEYSPACE",
                "--scylla-keyspace",
            ] {
                assert!(message.contains(needle), "{needle}: {message}");
            }
        }
        other => panic!("expected the tablet keyspace to be refused, got {other:?}"),
    }
    assert_eq!(
        node.row_count(&config.keyspace, "settings"),
        None,
        "nothing was created in it"
    );
}

// Fault tests: the test node's fault injection, at the store level.

use cqlnode::{Fault, FaultRule, StatementKind};
use vaxcamp_store::{Dose, PersonCode};

/// Doses for `people` people, one each, grouped in batches of `batch` per shard.
fn dose_batches(
    people: std::ops::Range<u32>,
    shards: usize,
    batch: usize,
) -> Vec<(usize, Vec<Dose>)> {
    let mut by_shard: Vec<Vec<Dose>> = vec![Vec::new(); shards];
    for n in people {
        let person = sample_registration(n).person_code;
        by_shard[shard_of(&person, shards)].push(sample_dose(&person, 1));
    }
    by_shard
        .into_iter()
        .enumerate()
        .flat_map(|(shard, doses)| {
            doses
                .chunks(batch)
                .map(|c| (shard, c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Commits a batch, retrying the same batch after every error, as the shard writer's caller
/// does; returns how many attempts failed.
async fn commit_until_ok(store: &ScyllaStore, shard: usize, doses: &[Dose]) -> u32 {
    let mut failures = 0;
    loop {
        match store.commit_doses(shard, doses).await {
            Ok(()) => return failures,
            Err(_) if failures < 200 => {
                failures += 1;
                // Give a dropped connection a moment to come back.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("commit kept failing: {e}"),
        }
    }
}

/// Runs `read` until it succeeds (at most ~5 s).
async fn with_retries<T, F, Fut>(what: &str, read: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = vaxcamp_store::Result<T>>,
{
    let mut tries = 0;
    loop {
        match read().await {
            Ok(value) => return value,
            Err(_) if tries < 250 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Every dose stored once, found once, counted once; stock used once per dose.
async fn assert_exactly_once(
    store: &ScyllaStore,
    node: &cqlnode::CqlNode,
    doses: &[Dose],
    what: &str,
) {
    let ids: Vec<_> = doses.iter().map(|d| d.dose_id).collect();
    // Right after injected faults (dropped connections) the driver may still be reconnecting:
    // reads are retried until the pool is back, as a caller would.
    let found = with_retries("find_doses", || store.find_doses(&ids)).await;
    assert_eq!(found.len(), doses.len(), "{what}: every dose found once");
    for dose in doses {
        let of: Vec<Dose> = with_retries("doses_of", || store.doses_of(&dose.person_code)).await;
        assert_eq!(of.len(), 1, "{what}: one dose for {}", dose.person_code);
        assert!(
            of[0].same_event_as(dose),
            "{what}: the stored dose is the one sent"
        );
    }
    let totals = with_retries("totals", || store.totals()).await;
    let n = doses.len() as u64;
    assert_eq!(totals.doses, n, "{what}: doses counted once");
    assert_eq!(
        totals.lot_usage.get(&doses[0].lot_key()).copied(),
        Some(n),
        "{what}: stock used once per dose"
    );
    let ks = store.keyspace();
    for table in ["dose_ids", "doses_by_person", "doses_by_site_day"] {
        assert_eq!(
            node.row_count(ks, table),
            Some(doses.len()),
            "{what}: one row per dose in {table}"
        );
    }
}

async fn commits_survive(fault: Fault, probability: f64, what: &str) {
    let target = target().await;
    let Some(node) = target.node_or_skip(what) else {
        return;
    };
    let store = connect(target.fresh()).await;
    let batches = dose_batches(0..120, store.shard_count(), 10);
    let rule = node.faults().add(
        FaultRule::new(fault)
            .on(StatementKind::Write)
            .on(StatementKind::Batch)
            .on(StatementKind::Read)
            .probability(probability),
    );
    let mut failures = 0;
    for (shard, doses) in &batches {
        failures += commit_until_ok(&store, *shard, doses).await;
    }
    // Send everything once more: every dose is already stored, so nothing may move.
    for (shard, doses) in &batches {
        failures += commit_until_ok(&store, *shard, doses).await;
    }
    let fired = node.faults().fired(rule);
    node.faults().clear();
    assert!(fired > 0, "{what}: the fault was injected");
    let all: Vec<Dose> = batches.into_iter().flat_map(|(_, d)| d).collect();
    assert_exactly_once(&store, node, &all, what).await;
    eprintln!("{what}: {fired} faults injected, {failures} commits retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_timeouts_that_were_applied_count_once() {
    commits_survive(
        Fault::WriteTimeout { applied: true },
        0.03,
        "applied timeouts",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_timeouts_that_were_not_applied_count_once() {
    commits_survive(Fault::WriteTimeout { applied: false }, 0.03, "timeouts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_and_unavailable_count_once() {
    commits_survive(Fault::Overloaded, 0.03, "overloaded").await;
    commits_survive(
        Fault::Unavailable {
            required: 2,
            alive: 1,
        },
        0.03,
        "unavailable",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_count_once() {
    commits_survive(
        Fault::DropConnection { applied: true },
        0.01,
        "dropped after applying",
    )
    .await;
    commits_survive(Fault::DropConnection { applied: false }, 0.01, "dropped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_below_the_retry_bound_never_reach_the_caller() {
    let target = target().await;
    let Some(node) = target.node_or_skip("faults_below_the_retry_bound_never_reach_the_caller")
    else {
        return;
    };
    let store = connect(target.fresh()).await;
    let mut batches = dose_batches(0..200, store.shard_count(), 5).into_iter();
    let mut committed = Vec::new();
    // Timeouts are resent by the driver (twice per request); overload and dropped connections
    // end the request on a one-node cluster, and the shard write is tried again (three
    // attempts): either way the caller sees nothing of two faults in a row.
    for fault in [
        Fault::WriteTimeout { applied: true },
        Fault::WriteTimeout { applied: false },
        Fault::Overloaded,
        Fault::Unavailable {
            required: 2,
            alive: 1,
        },
        Fault::DropConnection { applied: true },
        Fault::DropConnection { applied: false },
    ] {
        let (shard, doses) = batches.next().expect("a batch");
        let rule = node.faults().add(
            FaultRule::new(fault.clone())
                .on(StatementKind::Write)
                .on(StatementKind::Batch)
                .times(2),
        );
        store
            .commit_doses(shard, &doses)
            .await
            .unwrap_or_else(|e| panic!("{fault:?} twice: {e}"));
        assert_eq!(node.faults().fired(rule), 2, "{fault:?}");
        node.faults().remove(rule);
        committed.extend(doses);
    }
    assert_exactly_once(&store, node, &committed, "below the bound").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_fault_fails_the_commit_and_the_callers_retry_counts_once() {
    let target = target().await;
    let Some(node) = target.node_or_skip("a_persistent_fault_fails_the_commit") else {
        return;
    };
    let store = connect(target.fresh()).await;
    let mut committed = Vec::new();
    let mut batches = dose_batches(0..100, store.shard_count(), 5).into_iter();
    for fault in [
        Fault::WriteTimeout { applied: true },
        Fault::WriteTimeout { applied: false },
        Fault::Overloaded,
    ] {
        let (shard, doses) = batches.next().expect("a batch");
        let rule = node.faults().add(
            FaultRule::new(fault.clone())
                .on(StatementKind::Write)
                .on(StatementKind::Batch)
                .always(),
        );
        match store.commit_doses(shard, &doses).await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("{fault:?} always: {other:?}"),
        }
        node.faults().remove(rule);
        store
            .commit_doses(shard, &doses)
            .await
            .unwrap_or_else(|e| panic!("the retry after {fault:?}: {e}"));
        committed.extend(doses);
    }
    assert_exactly_once(&store, node, &committed, "persistent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_no_resend_cures_are_engine_errors_and_never_retried() {
    let target = target().await;
    let Some(node) =
        target.node_or_skip("errors_no_resend_cures_are_engine_errors_and_never_retried")
    else {
        return;
    };
    let store = connect(target.fresh()).await;
    let mut batches = dose_batches(0..40, store.shard_count(), 5).into_iter();
    let mut committed = Vec::new();
    for fault in [Fault::Invalid, Fault::Unauthorized] {
        let (shard, doses) = batches.next().expect("a batch");
        // Every claim is refused as it is (a statement the cluster rejects, a permission
        // revoked on `dose_ids`).
        let rule = node.faults().add(
            FaultRule::new(fault.clone())
                .on(StatementKind::Write)
                .table("dose_ids")
                .always(),
        );
        match store.commit_doses(shard, &doses).await {
            Err(StoreError::Engine(message)) => {
                assert!(message.contains("resending it cannot help"), "{message}")
            }
            other => panic!("{fault:?}: expected an engine error, got {other:?}"),
        }
        // One attempt: each claim sent once, neither resent by the driver nor tried again.
        assert_eq!(node.faults().fired(rule), doses.len() as u64, "{fault:?}");
        node.faults().remove(rule);
        store
            .commit_doses(shard, &doses)
            .await
            .unwrap_or_else(|e| panic!("the retry after {fault:?}: {e}"));
        committed.extend(doses);
    }
    // A read refused as it is: an engine error too, not "unavailable, retry later".
    let rule = node.faults().add(
        FaultRule::new(Fault::Invalid)
            .on(StatementKind::Read)
            .table("dose_ids"),
    );
    match store.find_doses(&[committed[0].dose_id]).await {
        Err(StoreError::Engine(_)) => {}
        other => panic!("expected an engine error, got {other:?}"),
    }
    assert_eq!(node.faults().fired(rule), 1);
    assert_exactly_once(&store, node, &committed, "refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_write_starts_no_attempt_once_the_request_timeout_has_passed() {
    let target = target().await;
    let Some(node) =
        target.node_or_skip("a_shard_write_starts_no_attempt_once_the_request_timeout")
    else {
        return;
    };
    let config = ScyllaConfig {
        request_timeout: Duration::from_millis(500),
        ..target.fresh()
    };
    let store = connect(config).await;
    let (shard, doses) = dose_batches(0..1, store.shard_count(), 1)
        .into_iter()
        .next()
        .expect("a dose");
    // The journal write is answered after the client's timeout, every time: the first attempt
    // alone takes the whole request timeout.
    let slow = node.faults().add(
        FaultRule::new(Fault::Delay(Duration::from_millis(800)))
            .on(StatementKind::Write)
            .table("shard_journal")
            .always(),
    );
    node.clear_requests();
    match store.commit_doses(shard, &doses).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("timeout"), "{message}")
        }
        other => panic!("expected the client's timeout, got {other:?}"),
    }
    node.faults().remove(slow);
    let journal_writes = node
        .requests()
        .into_iter()
        .filter(|r| r.kind == StatementKind::Write && r.statement.starts_with("INSERT"))
        .filter(|r| r.tables.iter().any(|(_, t)| t == "shard_journal"))
        .count();
    assert_eq!(
        journal_writes, 1,
        "one attempt: none is started once the request timeout has passed"
    );
    commit_until_ok(&store, shard, &doses).await;
    assert_exactly_once(&store, node, &doses, "timed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_under_faults_count_once() {
    let target = target().await;
    let Some(node) = target.node_or_skip("registrations_under_faults_count_once") else {
        return;
    };
    let store = connect(target.fresh()).await;
    node.faults().add(
        FaultRule::new(Fault::WriteTimeout { applied: true })
            .on(StatementKind::Write)
            .on(StatementKind::Batch)
            .probability(0.03),
    );
    let people: Vec<_> = (0..200).map(sample_registration).collect();
    for chunk in people.chunks(25) {
        let mut tries = 0;
        while store.import_registrations(chunk).await.is_err() {
            tries += 1;
            assert!(tries < 200, "import kept failing");
        }
    }
    node.faults().clear();
    let totals = with_retries("totals", || store.totals()).await;
    assert_eq!(totals.registrations, 200, "registrations counted once");
    let district = people[0].area.district_key();
    assert_eq!(
        totals.registrations_by_district.get(&district).copied(),
        Some(200)
    );
    let mut listed: Vec<PersonCode> = Vec::new();
    let mut after: Option<PersonCode> = None;
    loop {
        let page = store.people(after.as_ref(), 64).await.expect("people");
        let Some(last) = page.last() else { break };
        after = Some(last.person_code.clone());
        listed.extend(page.into_iter().map(|r| r.person_code));
    }
    assert_eq!(listed.len(), 200, "every registration listed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_commit_is_finished_by_the_next_process() {
    let target = target().await;
    let Some(node) = target.node_or_skip("an_interrupted_commit_is_finished_by_the_next_process")
    else {
        return;
    };
    let config = target.fresh();
    let store = connect(config.clone()).await;
    let batches = dose_batches(0..12, store.shard_count(), 100);
    let (shard, doses) = batches.first().cloned().expect("a batch");
    // The totals batch never lands: every dose is journaled and claimed, none is counted.
    let rule = node.faults().add(
        FaultRule::new(Fault::WriteTimeout { applied: false })
            .on(StatementKind::Batch)
            .always(),
    );
    assert!(store.commit_doses(shard, &doses).await.is_err());
    assert_eq!(store.totals().await.expect("totals").doses, 0);
    node.faults().remove(rule);
    drop(store);

    // A new process finishes the journal at start-up, before anyone retries.
    let reopened = connect(config).await;
    assert_eq!(
        reopened.totals().await.expect("totals").doses,
        doses.len() as u64
    );
    // The client's retry is then a no-op.
    reopened.commit_doses(shard, &doses).await.expect("retry");
    assert_exactly_once(&reopened, node, &doses, "recovered").await;
}

/// Waits until `done` holds, failing the test after `limit`.
async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the node's journal holds an entry for this dose (at any version).
fn journaled(node: &cqlnode::CqlNode, keyspace: &str, dose: &Dose) -> bool {
    let key = format!("dose/{}", dose.dose_id);
    node.rows(keyspace, "shard_journal")
        .unwrap_or_default()
        .iter()
        .any(|row| matches!(row.get("entry"), Some(cqlnode::Value::Text(k)) if *k == key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_write_that_lands_late_is_never_replayed() {
    let target = target().await;
    let Some(node) = target.node_or_skip("a_journal_write_that_lands_late_is_never_replayed")
    else {
        return;
    };
    let config = target.fresh();
    let store = connect(config.clone()).await;
    let ks = config.keyspace.clone();
    let (shard, doses) = dose_batches(0..40, store.shard_count(), 100)
        .into_iter()
        .find(|(_, doses)| doses.len() >= 2)
        .expect("two people in one shard");
    let (late, later) = (doses[0].clone(), doses[1].clone());

    // Dose A's journal entry times out on the client and is held on the node (every time it
    // is sent), so its write fails; the shard recovers (here on the read a retry is answered
    // from) while the journal is still empty.
    let stray = node.faults().add(
        FaultRule::new(Fault::LateWrite)
            .on(StatementKind::Write)
            .table("shard_journal")
            .always(),
    );
    assert!(
        store
            .commit_doses(shard, std::slice::from_ref(&late))
            .await
            .is_err()
    );
    node.faults().remove(stray);
    assert!(
        store
            .find_doses(&[late.dose_id])
            .await
            .expect("find")
            .is_empty()
    );
    assert!(!journaled(node, &ks, &late), "held until released");
    // Now A's journal entry lands, after the recovery.
    assert!(node.faults().release_late_writes() > 0);
    assert!(journaled(node, &ks, &late), "A's journal entry landed");

    // Dose B's write then fails after its claim (the totals never land), and the shard
    // recovers again: it must replay B, and never the stray entry of A.
    let totals = node.faults().add(
        FaultRule::new(Fault::WriteTimeout { applied: false })
            .on(StatementKind::Batch)
            .table("shard_totals")
            .always(),
    );
    assert!(
        store
            .commit_doses(shard, std::slice::from_ref(&later))
            .await
            .is_err()
    );
    node.faults().remove(totals);
    let ids = [late.dose_id, later.dose_id];
    let found = with_retries("find_doses", || store.find_doses(&ids)).await;
    assert_eq!(
        found,
        vec![later.clone()],
        "B is recorded, A (answered as failed) is not"
    );
    assert!(
        store
            .doses_of(&late.person_code)
            .await
            .expect("doses_of")
            .is_empty()
    );
    assert_eq!(store.totals().await.expect("totals").doses, 1);

    // A's client retries: recorded once, as any new dose.
    store
        .commit_doses(shard, std::slice::from_ref(&late))
        .await
        .expect("the retry");
    assert_exactly_once(&store, node, &[late, later], "late journal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_responses_within_the_timeout_succeed_and_slower_ones_fail_cleanly() {
    let target = target().await;
    let Some(node) = target
        .node_or_skip("slow_responses_within_the_timeout_succeed_and_slower_ones_fail_cleanly")
    else {
        return;
    };
    let config = ScyllaConfig {
        request_timeout: Duration::from_millis(500),
        ..target.fresh()
    };
    let store = connect(config).await;
    let batches = dose_batches(0..20, store.shard_count(), 100);
    let (first, rest) = batches.split_first().expect("batches");

    let slow = node.faults().delay_all(Duration::from_millis(30));
    store
        .commit_doses(first.0, &first.1)
        .await
        .expect("slow but within the timeout");
    node.faults().remove(slow);

    let too_slow = node.faults().delay_all(Duration::from_millis(800));
    let (shard, doses) = rest.first().expect("a second batch");
    assert!(
        store.commit_doses(*shard, doses).await.is_err(),
        "past the timeout: an error"
    );
    node.faults().remove(too_slow);
    for (shard, doses) in rest {
        commit_until_ok(&store, *shard, doses).await;
    }
    let all: Vec<Dose> = batches.into_iter().flat_map(|(_, d)| d).collect();
    assert_exactly_once(&store, node, &all, "slow").await;
}

// The writer lease: one process writes a keyspace at a time.

/// A short lease, so that takeovers happen within the test.
fn short_lease(config: ScyllaConfig, wait: Option<Duration>) -> ScyllaConfig {
    // A third of the lease covers twice the request timeout plus the clock skew allowance, as
    // `connect` requires: writes stop 1.6 s after a renewal, which comes every 800 ms.
    ScyllaConfig {
        lease_duration: Duration::from_millis(2400),
        request_timeout: Duration::from_millis(300),
        max_clock_skew: Duration::from_millis(200),
        wait_for_lease: wait,
        ..config
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_too_short_for_the_timeout_and_clock_skew_is_refused() {
    let config = ScyllaConfig {
        request_timeout: Duration::from_secs(5),
        ..ScyllaConfig::default()
    };
    match ScyllaStore::connect(config).await {
        Err(StoreError::Engine(message)) => {
            assert!(
                message.contains("a third of the lease duration"),
                "{message}"
            )
        }
        other => panic!("expected the settings to be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_its_lease_never_takes_it_again() {
    let target = target().await;
    let Some(node) = target.node_or_skip("a_store_that_lost_its_lease_never_takes_it_again") else {
        return;
    };
    let config = short_lease(target.fresh(), Some(Duration::from_secs(5)));
    let first = connect(config.clone()).await;
    assert!(first.holds_writer_lease());
    // Its renewals fail (the lease row's node is overloaded) until its write window lapses.
    let rule = node.faults().add(
        FaultRule::new(Fault::Overloaded)
            .on(StatementKind::Write)
            .table("writer_lease")
            .always(),
    );
    wait_until(
        "the first store loses its lease",
        Duration::from_secs(10),
        || !first.holds_writer_lease(),
    )
    .await;
    node.faults().remove(rule);

    // Another process takes it over once it expires, writes, and lets it go.
    let second = connect(config.clone()).await;
    assert!(second.holds_writer_lease());
    second
        .register(&sample_registration(1))
        .await
        .expect("the new holder writes");
    second.close().await.expect("close");

    // The lease is free, and the first store does not take it back: its writes stay refused,
    // saying why, and a third process gets the lease at once.
    match first.register(&sample_registration(2)).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.contains("no longer holds the writer lease"),
                "{message}"
            );
            assert!(
                message.contains("overdue") || message.contains("could not be renewed"),
                "{message}"
            );
        }
        other => panic!("a store that lost its lease wrote: {other:?}"),
    }
    let third = connect(short_lease(config, None)).await;
    assert!(third.holds_writer_lease());
    assert!(!first.holds_writer_lease());
    assert_eq!(third.totals().await.expect("totals").registrations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_write_while_the_first_holds_the_lease() {
    let target = target().await;
    let config = short_lease(target.fresh(), None);
    let first = connect(config.clone()).await;
    assert!(first.holds_writer_lease());
    let (owner, holder) = first.writer_lease_owner();
    match ScyllaStore::connect(config.clone()).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains(&owner.to_string()), "{message}");
            assert!(message.contains(holder), "{message}");
            assert!(message.contains("until"), "{message}");
        }
        other => panic!("expected the lease to be refused, got {other:?}"),
    }
    // Closing releases the lease: a waiting process takes over at once, and the first one's
    // writes are refused from then on.
    first.close().await.expect("close");
    assert!(!first.holds_writer_lease());
    let second = connect(short_lease(config, Some(Duration::from_secs(5)))).await;
    assert!(second.holds_writer_lease());
    let person = sample_registration(7);
    match first.register(&person).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.contains("no longer holds the writer lease"),
                "{message}"
            )
        }
        other => panic!("expected a refused write, got {other:?}"),
    }
    // Reads need no lease.
    assert_eq!(first.totals().await.expect("totals").registrations, 0);
    second.register(&person).await.expect("register");
    assert_eq!(first.totals().await.expect("totals").registrations, 1);
}

#[test]
fn a_paused_writer_is_fenced_after_its_lease_expires_and_totals_stay_exact() {
    // The first store runs on its own current-thread runtime, which makes progress only inside
    // `block_on`: between calls it is a paused process (no renewals, no requests).
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let running = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let target = running.block_on(target());
    let config = short_lease(target.fresh(), Some(Duration::from_secs(5)));
    let first = paused.block_on(connect(config.clone()));
    let shards = first.shard_count();
    let batches = dose_batches(0..40, shards, 10);
    let (before, after) = batches.split_at(batches.len() / 2);
    paused.block_on(async {
        for (shard, doses) in before {
            first.commit_doses(*shard, doses).await.expect("commit");
        }
    });

    // The first process is paused: its lease expires and the second takes over.
    let second = running.block_on(connect(config));
    assert!(second.holds_writer_lease());
    running.block_on(async {
        for (shard, doses) in after {
            second.commit_doses(*shard, doses).await.expect("commit");
        }
    });

    // The first process wakes up: its writes are refused (fenced), whatever it sends.
    paused.block_on(async {
        for (shard, doses) in &batches {
            match first.commit_doses(*shard, doses).await {
                // Its lease lapsed while it was paused: lost for good, it stays a reader.
                Err(StoreError::Unavailable(message)) => assert!(
                    message.contains("writer lease") && message.contains("overdue"),
                    "{message}"
                ),
                other => panic!("a fenced writer wrote: {other:?}"),
            }
        }
        assert!(!first.holds_writer_lease());
    });

    // Every dose counted once across the takeover; the new holder's resends change nothing.
    running.block_on(async {
        for (shard, doses) in &batches {
            second.commit_doses(*shard, doses).await.expect("resend");
        }
        let all: Vec<Dose> = batches.iter().flat_map(|(_, d)| d.clone()).collect();
        if let Some(node) = &target.node {
            assert_exactly_once(&second, node, &all, "takeover").await;
        } else {
            assert_eq!(
                second.totals().await.expect("totals").doses,
                all.len() as u64
            );
        }
    });
    drop(first);
    drop(paused);
    running.block_on(async { drop(second) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_writers_lease_is_taken_over_with_its_interrupted_write_finished() {
    let target = target().await;
    let Some(node) = target
        .node_or_skip("a_dropped_writers_lease_is_taken_over_with_its_interrupted_write_finished")
    else {
        return;
    };
    let config = short_lease(target.fresh(), Some(Duration::from_secs(5)));
    let first = connect(config.clone()).await;
    let batches = dose_batches(0..12, first.shard_count(), 100);
    let (shard, doses) = batches.first().cloned().expect("a batch");
    // The totals never land: the doses are journaled and claimed, not counted.
    let rule = node.faults().add(
        FaultRule::new(Fault::WriteTimeout { applied: false })
            .on(StatementKind::Batch)
            .always(),
    );
    assert!(first.commit_doses(shard, &doses).await.is_err());
    node.faults().remove(rule);
    drop(first);
    let second = connect(config).await;
    assert!(second.holds_writer_lease());
    assert_eq!(
        second.totals().await.expect("totals").doses,
        doses.len() as u64
    );
    second.commit_doses(shard, &doses).await.expect("retry");
    assert_exactly_once(&second, node, &doses, "taken over").await;
}
