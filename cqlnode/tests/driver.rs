//! End-to-end tests: the real `scylla` 1.9 driver against a `CqlNode` on `127.0.0.1:0`.

use std::ops::ControlFlow;
use std::time::Duration;

use futures_util::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError, WriteType as DriverWriteType};
use scylla::response::PagingState;
use scylla::statement::Consistency as DriverConsistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::Counter;
use uuid::Uuid;
use vaxcamp_cqlnode::{
    Consistency, CqlNode, Fault, FaultRule, NodeConfig, StatementKind, Value, WriteType,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn connect(node: &CqlNode) -> Result<Session, Box<dyn std::error::Error>> {
    Ok(SessionBuilder::new()
        .known_node_addr(node.addr())
        .build()
        .await?)
}

/// A node with keyspace `ks` and a session using it.
async fn setup() -> Result<(CqlNode, Session), Box<dyn std::error::Error>> {
    let node = CqlNode::start(NodeConfig::default()).await?;
    let session = connect(&node).await?;
    session
        .query_unpaged(
            "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            &[],
        )
        .await?;
    session.use_keyspace("ks", false).await?;
    Ok((node, session))
}

/// The database error of a failed request, if that is what it is.
fn db_error(err: &ExecutionError) -> Option<&DbError> {
    match err {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => Some(db),
        _ => None,
    }
}

#[tokio::test]
async fn driver_connects_and_sees_one_node_and_the_schema() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (p text, c int, v blob, PRIMARY KEY (p, c)) WITH CLUSTERING ORDER BY (c DESC)", &[])
        .await?;
    let agreed = session.await_schema_agreement().await?;
    assert_eq!(agreed, node.schema_version());
    session.refresh_metadata().await?;
    let state = session.get_cluster_state();
    let nodes = state.get_nodes_info();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].host_id, node.host_id());
    assert_eq!(nodes[0].datacenter.as_deref(), Some("datacenter1"));
    let keyspace = state
        .get_keyspace("ks")
        .ok_or("keyspace metadata missing")?;
    let table = keyspace.tables.get("t").ok_or("table metadata missing")?;
    assert_eq!(table.partition_key, ["p"]);
    assert_eq!(table.clustering_key, ["c"]);
    assert_eq!(table.columns.len(), 3);
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn prepared_writes_and_reads_round_trip_every_scalar_type() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged(
            "CREATE TABLE IF NOT EXISTS ks.everything (id uuid, n int, big bigint, small smallint, tiny tinyint, \
             flag boolean, data blob, name text, code ascii, ratio double, at timestamp, day date, tid timeuuid, \
             PRIMARY KEY (id))",
            &[],
        )
        .await?;
    let insert = session
        .prepare("INSERT INTO everything (id, n, big, small, tiny, flag, data, name, code, ratio, at, day, tid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .await?;
    assert!(
        insert.is_token_aware(),
        "pk_indexes must let the driver route by token"
    );
    let id = Uuid::new_v4();
    let tid = Uuid::parse_str("8e14e760-7250-11e0-a1f0-0800200c9a66")?;
    let at = scylla::value::CqlTimestamp(1_700_000_000_000);
    let day = scylla::value::CqlDate((1 << 31) + 19_000);
    session
        .execute_unpaged(
            &insert,
            (
                id,
                7_i32,
                1_i64 << 40,
                -3_i16,
                9_i8,
                true,
                vec![1_u8, 2, 3],
                "héllo",
                "ascii",
                0.25_f64,
                at,
                day,
                scylla::value::CqlTimeuuid::from(tid),
            ),
        )
        .await?;
    let select = session.prepare("SELECT n, big, small, tiny, flag, data, name, code, ratio, at, day FROM everything WHERE id = ?").await?;
    let row = session
        .execute_unpaged(&select, (id,))
        .await?
        .into_rows_result()?
        .single_row::<(
            i32,
            i64,
            i16,
            i8,
            bool,
            Vec<u8>,
            String,
            String,
            f64,
            scylla::value::CqlTimestamp,
            scylla::value::CqlDate,
        )>()?;
    assert_eq!(row.0, 7);
    assert_eq!(row.1, 1 << 40);
    assert_eq!((row.2, row.3, row.4), (-3, 9, true));
    assert_eq!(row.5, vec![1, 2, 3]);
    assert_eq!(
        (row.6.as_str(), row.7.as_str(), row.8),
        ("héllo", "ascii", 0.25)
    );
    assert_eq!((row.9, row.10), (at, day));
    // Nulls and a literal statement without values.
    session
        .query_unpaged(
            format!(
                "INSERT INTO everything (id, name) VALUES ({}, 'lit')",
                Uuid::nil()
            ),
            &[],
        )
        .await?;
    let (n, name) = session
        .execute_unpaged(
            &session
                .prepare("SELECT n, name FROM everything WHERE id = ?")
                .await?,
            (Uuid::nil(),),
        )
        .await?
        .into_rows_result()?
        .single_row::<(Option<i32>, String)>()?;
    assert_eq!((n, name.as_str()), (None, "lit"));
    assert_eq!(node.row_count("ks", "everything"), Some(2));
    Ok(())
}

#[tokio::test]
async fn lightweight_transactions_report_applied_and_the_existing_row() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged(
            "CREATE TABLE reg (id text PRIMARY KEY, owner text, version int)",
            &[],
        )
        .await?;
    let insert = session
        .prepare("INSERT INTO reg (id, owner, version) VALUES (?, ?, ?) IF NOT EXISTS")
        .await?;
    let first = session
        .execute_unpaged(&insert, ("a", "alice", 1_i32))
        .await?
        .into_rows_result()?;
    assert_eq!(first.single_row::<(bool,)>()?, (true,));
    let second = session
        .execute_unpaged(&insert, ("a", "bob", 2_i32))
        .await?
        .into_rows_result()?;
    let (applied, id, owner, version) =
        second.single_row::<(bool, Option<String>, Option<String>, Option<i32>)>()?;
    assert!(!applied);
    assert_eq!(
        (id.as_deref(), owner.as_deref(), version),
        (Some("a"), Some("alice"), Some(1))
    );

    let cas = session
        .prepare("UPDATE reg SET owner = ?, version = ? WHERE id = ? IF version = ?")
        .await?;
    let ok = session
        .execute_unpaged(&cas, ("carol", 2_i32, "a", 1_i32))
        .await?
        .into_rows_result()?;
    assert_eq!(ok.single_row::<(bool,)>()?, (true,));
    let stale = session
        .execute_unpaged(&cas, ("dave", 3_i32, "a", 1_i32))
        .await?
        .into_rows_result()?;
    assert_eq!(stale.single_row::<(bool, Option<i32>)>()?, (false, Some(2)));

    let delete = session
        .prepare("DELETE FROM reg WHERE id = ? IF EXISTS")
        .await?;
    let gone = session
        .execute_unpaged(&delete, ("a",))
        .await?
        .into_rows_result()?;
    assert_eq!(gone.single_row::<(bool,)>()?, (true,));
    let again = session
        .execute_unpaged(&delete, ("a",))
        .await?
        .into_rows_result()?;
    assert_eq!(again.single_row::<(bool,)>()?, (false,));
    assert_eq!(node.row_count("ks", "reg"), Some(0));
    Ok(())
}

#[tokio::test]
async fn counters_add_and_subtract() -> TestResult {
    let (_node, session) = setup().await?;
    session
        .query_unpaged(
            "CREATE TABLE stock (lot text PRIMARY KEY, used counter, wasted counter)",
            &[],
        )
        .await?;
    let add = session
        .prepare("UPDATE stock SET used = used + ? WHERE lot = ?")
        .await?;
    let sub = session
        .prepare("UPDATE stock SET used = used - ?, wasted = wasted + ? WHERE lot = ?")
        .await?;
    session.execute_unpaged(&add, (Counter(5), "L1")).await?;
    session
        .execute_unpaged(&sub, (Counter(2), Counter(1), "L1"))
        .await?;
    let row = session
        .query_unpaged("SELECT used, wasted FROM stock WHERE lot = 'L1'", &[])
        .await?
        .into_rows_result()?
        .single_row::<(Counter, Counter)>()?;
    assert_eq!(row, (Counter(3), Counter(1)));
    let err = session
        .query_unpaged("INSERT INTO stock (lot, used) VALUES ('x', 1)", &[])
        .await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::Invalid)
        ),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn clustering_ranges_honour_desc_and_order_by() -> TestResult {
    let (_node, session) = setup().await?;
    session
        .query_unpaged(
            "CREATE TABLE doses (site text, day int, person int, seq int, lot text, PRIMARY KEY ((site, day), person, seq)) WITH CLUSTERING ORDER BY (person DESC, seq DESC)",
            &[],
        )
        .await?;
    let insert = session
        .prepare("INSERT INTO doses (site, day, person, seq, lot) VALUES (?, ?, ?, ?, ?)")
        .await?;
    for person in 0..6_i32 {
        for seq in 0..2_i32 {
            session
                .execute_unpaged(&insert, ("s1", 1_i32, person, seq, format!("lot{person}")))
                .await?;
        }
    }
    session
        .execute_unpaged(&insert, ("s1", 2_i32, 0_i32, 0_i32, "other"))
        .await?;
    let range = session.prepare("SELECT person, seq FROM doses WHERE site = ? AND day = ? AND person >= ? AND person < ?").await?;
    let rows: Vec<(i32, i32)> = session
        .execute_unpaged(&range, ("s1", 1_i32, 2_i32, 4_i32))
        .await?
        .into_rows_result()?
        .rows()?
        .collect::<Result<_, _>>()?;
    assert_eq!(rows, [(3, 1), (3, 0), (2, 1), (2, 0)]);
    let prefix = session
        .prepare("SELECT seq FROM doses WHERE site = ? AND day = ? AND person = ? AND seq > ?")
        .await?;
    let rows: Vec<(i32,)> = session
        .execute_unpaged(&prefix, ("s1", 1_i32, 5_i32, 0_i32))
        .await?
        .into_rows_result()?
        .rows()?
        .collect::<Result<_, _>>()?;
    assert_eq!(rows, [(1,)]);
    let asc = session.prepare("SELECT person, seq FROM doses WHERE site = ? AND day = ? ORDER BY person ASC, seq ASC LIMIT 3").await?;
    let rows: Vec<(i32, i32)> = session
        .execute_unpaged(&asc, ("s1", 1_i32))
        .await?
        .into_rows_result()?
        .rows()?
        .collect::<Result<_, _>>()?;
    assert_eq!(rows, [(0, 0), (0, 1), (1, 0)]);
    let count = session
        .query_unpaged(
            "SELECT COUNT(*) FROM doses WHERE site = 's1' AND day = 1",
            &[],
        )
        .await?
        .into_rows_result()?
        .single_row::<(i64,)>()?;
    assert_eq!(count, (12,));
    // A range without the partition key needs ALLOW FILTERING, as on a real cluster.
    let err = session
        .query_unpaged("SELECT * FROM doses WHERE person > 1", &[])
        .await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::Invalid)
        ),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn token_scans_agree_with_the_driver_partitioner() -> TestResult {
    let (_node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE people (id text PRIMARY KEY, n int)", &[])
        .await?;
    let insert = session
        .prepare("INSERT INTO people (id, n) VALUES (?, ?)")
        .await?;
    let mut expected = Vec::new();
    for n in 0..30_i32 {
        let id = format!("person-{n}");
        let token = insert
            .calculate_token(&(id.as_str(), n))?
            .ok_or("no token")?
            .value();
        session.execute_unpaged(&insert, (id.as_str(), n)).await?;
        expected.push((token, id));
    }
    expected.sort();
    // A full scan comes back in token order.
    let all: Vec<(String,)> = session
        .query_unpaged("SELECT id FROM people", &[])
        .await?
        .into_rows_result()?
        .rows()?
        .collect::<Result<_, _>>()?;
    assert_eq!(
        all.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        expected.iter().map(|e| e.1.clone()).collect::<Vec<_>>()
    );
    // Scanning by token ranges, the way a full-table export splits the ring.
    let scan = session
        .prepare("SELECT id FROM people WHERE token(id) > ? AND token(id) <= ?")
        .await?;
    let mid = expected[expected.len() / 2].0;
    let mut seen = Vec::new();
    for (low, high) in [(i64::MIN, mid), (mid, i64::MAX)] {
        let rows: Vec<(String,)> = session
            .execute_unpaged(&scan, (low, high))
            .await?
            .into_rows_result()?
            .rows()?
            .collect::<Result<_, _>>()?;
        seen.extend(rows.into_iter().map(|r| r.0));
    }
    assert_eq!(
        seen,
        expected.iter().map(|e| e.1.clone()).collect::<Vec<_>>()
    );
    let from = session
        .prepare("SELECT id FROM people WHERE token(id) >= ?")
        .await?;
    let last = expected.last().ok_or("empty")?;
    let rows: Vec<(String,)> = session
        .execute_unpaged(&from, (last.0,))
        .await?
        .into_rows_result()?
        .rows()?
        .collect::<Result<_, _>>()?;
    assert_eq!(rows, [(last.1.clone(),)]);
    // IN on the partition key.
    let by_ids = session
        .prepare("SELECT n FROM people WHERE id IN (?, ?)")
        .await?;
    let rows = session
        .execute_unpaged(&by_ids, ("person-3", "person-4"))
        .await?
        .into_rows_result()?
        .rows_num();
    assert_eq!(rows, 2);
    Ok(())
}

#[tokio::test]
async fn paging_walks_every_row_once_with_small_pages() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged(
            "CREATE TABLE events (p int, c int, v text, PRIMARY KEY (p, c))",
            &[],
        )
        .await?;
    let insert = session
        .prepare("INSERT INTO events (p, c, v) VALUES (?, ?, ?)")
        .await?;
    for p in 0..3_i32 {
        for c in 0..9_i32 {
            session
                .execute_unpaged(&insert, (p, c, format!("{p}-{c}")))
                .await?;
        }
    }
    // One partition, page by page by hand.
    let mut one = session.prepare("SELECT c FROM events WHERE p = ?").await?;
    one.set_page_size(4);
    let mut state = PagingState::start();
    let mut pages = 0;
    let mut got = Vec::new();
    loop {
        let (result, next) = session.execute_single_page(&one, (1_i32,), state).await?;
        pages += 1;
        got.extend(
            result
                .into_rows_result()?
                .rows::<(i32,)>()?
                .map(|r| r.map(|r| r.0))
                .collect::<Result<Vec<_>, _>>()?,
        );
        match next.into_paging_control_flow() {
            ControlFlow::Continue(s) => state = s,
            ControlFlow::Break(()) => break,
        }
    }
    assert_eq!(got, (0..9).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    // A full scan through the driver's pager, with a LIMIT that ends mid-page.
    let mut all = session.prepare("SELECT p, c FROM events").await?;
    all.set_page_size(5);
    let rows: Vec<(i32, i32)> = session
        .execute_iter(all, ())
        .await?
        .rows_stream::<(i32, i32)>()?
        .try_collect()
        .await?;
    assert_eq!(rows.len(), 27);
    let mut limited = session.prepare("SELECT p, c FROM events LIMIT 12").await?;
    limited.set_page_size(5);
    let rows: Vec<(i32, i32)> = session
        .execute_iter(limited, ())
        .await?
        .rows_stream::<(i32, i32)>()?
        .try_collect()
        .await?;
    assert_eq!(rows.len(), 12);
    let page_sizes: Vec<Option<i32>> = node
        .requests()
        .iter()
        .filter(|r| r.kind == StatementKind::Read && r.statement.contains("LIMIT 12"))
        .map(|r| r.page_size)
        .collect();
    assert_eq!(page_sizes, [Some(5), Some(5), Some(5)]);
    Ok(())
}

#[tokio::test]
async fn batches_apply_all_or_nothing() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE a (k int PRIMARY KEY, v text)", &[])
        .await?;
    session
        .query_unpaged("CREATE TABLE c (k int PRIMARY KEY, n counter)", &[])
        .await?;
    let insert = session
        .prepare("INSERT INTO a (k, v) VALUES (?, ?)")
        .await?;
    let mut batch = Batch::new(BatchType::Logged);
    batch.append_statement(insert.clone());
    batch.append_statement(insert.clone());
    batch.append_statement("UPDATE a SET v = ? WHERE k = ?");
    session
        .batch(&batch, ((1_i32, "one"), (2_i32, "two"), ("uno", 1_i32)))
        .await?;
    assert_eq!(node.row_count("ks", "a"), Some(2));
    let rows = node.rows("ks", "a").ok_or("no table")?;
    assert!(
        rows.iter()
            .any(|r| r.get("v") == Some(&Value::Text("uno".into())))
    );

    // One bad statement (a missing key) refuses the whole batch.
    let mut bad = Batch::new(BatchType::Unlogged);
    bad.append_statement(insert.clone());
    bad.append_statement("INSERT INTO a (v) VALUES (?)");
    let err = session.batch(&bad, ((3_i32, "three"), ("orphan",))).await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::Invalid)
        ),
        "{err:?}"
    );
    assert_eq!(node.row_count("ks", "a"), Some(2));

    let add = session
        .prepare("UPDATE c SET n = n + ? WHERE k = ?")
        .await?;
    let mut counters = Batch::new(BatchType::Counter);
    counters.append_statement(add.clone());
    counters.append_statement(add);
    session
        .batch(&counters, ((Counter(2), 1_i32), (Counter(3), 1_i32)))
        .await?;
    assert_eq!(
        node.rows("ks", "c").ok_or("no table")?[0].get("n"),
        Some(&Value::Counter(5))
    );
    Ok(())
}

#[tokio::test]
async fn errors_map_to_the_driver_error_kinds() -> TestResult {
    let (node, session) = setup().await?;
    let err = session.query_unpaged("SELEKT nothing", &[]).await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::SyntaxError)
        ),
        "{err:?}"
    );
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY)", &[])
        .await?;
    let err = session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY)", &[])
        .await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::AlreadyExists { .. })
        ),
        "{err:?}"
    );
    let err = session.query_unpaged("SELECT * FROM missing", &[]).await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::Invalid)
        ),
        "{err:?}"
    );
    // The driver re-prepares transparently after UNPREPARED.
    let select = session.prepare("SELECT k FROM t WHERE k = ?").await?;
    node.forget_prepared();
    session.execute_unpaged(&select, (1_i32,)).await?;
    let prepares = node
        .requests()
        .iter()
        .filter(|r| r.kind == StatementKind::Prepare && r.statement.contains("FROM t WHERE"))
        .count();
    assert!(prepares >= 2, "expected a re-prepare, saw {prepares}");
    session.query_unpaged("DROP TABLE t", &[]).await?;
    session.query_unpaged("DROP TABLE IF EXISTS t", &[]).await?;
    assert_eq!(node.row_count("ks", "t"), None);
    Ok(())
}

#[tokio::test]
async fn consistency_levels_are_recorded() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY, v int)", &[])
        .await?;
    let mut write = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?) IF NOT EXISTS")
        .await?;
    write.set_consistency(DriverConsistency::LocalQuorum);
    write.set_serial_consistency(Some(scylla::statement::SerialConsistency::LocalSerial));
    session.execute_unpaged(&write, (1_i32, 1_i32)).await?;
    let mut read = session.prepare("SELECT v FROM t WHERE k = ?").await?;
    read.set_consistency(DriverConsistency::One);
    session.execute_unpaged(&read, (1_i32,)).await?;
    assert_eq!(
        node.last_consistency(StatementKind::Write),
        Some(Consistency::LocalQuorum)
    );
    assert_eq!(
        node.last_consistency(StatementKind::Read),
        Some(Consistency::One)
    );
    let last_write = node
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.kind == StatementKind::Write)
        .ok_or("no write")?;
    assert_eq!(
        last_write.serial_consistency,
        Some(Consistency::LocalSerial)
    );
    assert_eq!(last_write.tables, [("ks".to_string(), "t".to_string())]);
    Ok(())
}

#[tokio::test]
async fn the_log_tells_prepared_statements_from_query_text() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY, v int)", &[])
        .await?;
    node.clear_requests();
    session
        .query_unpaged("INSERT INTO t (k, v) VALUES (1, 1)", &[])
        .await?;
    let insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?)")
        .await?;
    session.execute_unpaged(&insert, (2_i32, 2_i32)).await?;
    let mut batch = Batch::new(BatchType::Unlogged);
    batch.append_statement(insert.clone());
    session.batch(&batch, ((3_i32, 3_i32),)).await?;
    let seen: Vec<(StatementKind, bool)> = node
        .requests()
        .into_iter()
        .filter(|r| r.tables.iter().any(|(_, t)| t == "t"))
        .map(|r| (r.kind, r.prepared))
        .collect();
    assert_eq!(
        seen,
        [
            (StatementKind::Write, false),
            (StatementKind::Prepare, false),
            (StatementKind::Write, true),
            (StatementKind::Batch, true),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn tablets_are_on_by_default_for_network_topology_keyspaces_as_on_scylladb_6() -> TestResult {
    let node = CqlNode::start(NodeConfig::default()).await?;
    let session = connect(&node).await?;
    let nts = "{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}";
    session
        .query_unpaged(format!("CREATE KEYSPACE tab WITH replication = {nts}"), &[])
        .await?;
    session
        .query_unpaged(
            format!(
                "CREATE KEYSPACE vnodes WITH replication = {nts} AND tablets = {{'enabled': false}}"
            ),
            &[],
        )
        .await?;
    session.await_schema_agreement().await?;
    session.refresh_metadata().await?;
    let state = session.get_cluster_state();
    assert!(state.get_keyspace("tab").ok_or("tab")?.tablet_based);
    assert!(!state.get_keyspace("vnodes").ok_or("vnodes")?.tablet_based);
    let (features,): (Option<String>,) = session
        .query_unpaged("SELECT supported_features FROM system.local", &[])
        .await?
        .into_rows_result()?
        .single_row()?;
    assert!(
        features
            .unwrap_or_default()
            .split(',')
            .any(|f| f == "TABLETS")
    );
    for ks in ["tab", "vnodes"] {
        session
            .query_unpaged(format!("CREATE TABLE {ks}.t (k int PRIMARY KEY)"), &[])
            .await?;
    }
    let lwt = session
        .query_unpaged("INSERT INTO tab.t (k) VALUES (1) IF NOT EXISTS", &[])
        .await;
    assert!(
        matches!(
            lwt.as_ref().err().and_then(db_error),
            Some(DbError::Invalid)
        ),
        "{lwt:?}"
    );
    session
        .query_unpaged("INSERT INTO vnodes.t (k) VALUES (1) IF NOT EXISTS", &[])
        .await?;

    // A node that does not know tablets refuses the option as Cassandra does.
    let old = CqlNode::start(NodeConfig::default().without_tablets()).await?;
    let session = connect(&old).await?;
    let refused = session
        .query_unpaged(
            format!(
                "CREATE KEYSPACE vnodes WITH replication = {nts} AND tablets = {{'enabled': false}}"
            ),
            &[],
        )
        .await;
    assert!(
        matches!(
            refused.as_ref().err().and_then(db_error),
            Some(DbError::SyntaxError)
        ),
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test]
async fn password_authentication_accepts_only_the_configured_user() -> TestResult {
    let node = CqlNode::start(NodeConfig::default().with_credentials("vax", "secret")).await?;
    let session = SessionBuilder::new()
        .known_node_addr(node.addr())
        .user("vax", "secret")
        .build()
        .await?;
    session
        .query_unpaged("SELECT host_id FROM system.local", &[])
        .await?;
    let wrong = SessionBuilder::new()
        .known_node_addr(node.addr())
        .user("vax", "nope")
        .build()
        .await;
    assert!(wrong.is_err());
    Ok(())
}

// ---- Faults -------------------------------------------------------------------------------

#[tokio::test]
async fn write_timeout_after_applying_is_ambiguous_but_written() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY, v int)", &[])
        .await?;
    session
        .query_unpaged("CREATE TABLE other (k int PRIMARY KEY)", &[])
        .await?;
    let rule = node.faults().add(
        FaultRule::new(Fault::WriteTimeout { applied: true })
            .on(StatementKind::Write)
            .table("t"),
    );
    let insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?)")
        .await?;
    // A write on another table is not matched.
    session
        .query_unpaged("INSERT INTO other (k) VALUES (1)", &[])
        .await?;
    let err = session.execute_unpaged(&insert, (1_i32, 10_i32)).await;
    match err.as_ref().err().and_then(db_error) {
        Some(DbError::WriteTimeout { write_type, .. }) => {
            assert_eq!(*write_type, DriverWriteType::Simple)
        }
        other => panic!("expected a write timeout, got {other:?} ({err:?})"),
    }
    assert_eq!(node.faults().fired(rule), 1);
    assert_eq!(
        node.row_count("ks", "t"),
        Some(1),
        "the write was applied despite the timeout"
    );
    // Not applied: nothing written.
    node.faults()
        .fail_writes(1, Fault::WriteTimeout { applied: false });
    assert!(
        session
            .execute_unpaged(&insert, (2_i32, 20_i32))
            .await
            .is_err()
    );
    assert_eq!(node.row_count("ks", "t"), Some(1));
    // The next write goes through.
    session.execute_unpaged(&insert, (2_i32, 20_i32)).await?;
    assert_eq!(node.row_count("ks", "t"), Some(2));
    Ok(())
}

#[tokio::test]
async fn a_late_write_fails_at_once_and_lands_when_released() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY, v int)", &[])
        .await?;
    let rule = node.faults().add(
        FaultRule::new(Fault::LateWrite)
            .on(StatementKind::Write)
            .table("t"),
    );
    let insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?)")
        .await?;
    let err = session.execute_unpaged(&insert, (1_i32, 10_i32)).await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::WriteTimeout { .. })
        ),
        "{err:?}"
    );
    assert_eq!(node.faults().fired(rule), 1);
    assert_eq!(node.faults().held_late_writes(), 1);
    // Held until released, however long the test takes meanwhile; other writes go through.
    session.execute_unpaged(&insert, (2_i32, 20_i32)).await?;
    assert_eq!(node.row_count("ks", "t"), Some(1), "only the other write");
    assert_eq!(node.faults().release_late_writes(), 1);
    assert_eq!(node.row_count("ks", "t"), Some(2), "landed on release");
    assert_eq!(node.faults().held_late_writes(), 0);
    assert_eq!(node.faults().release_late_writes(), 0);
    Ok(())
}

#[tokio::test]
async fn write_timeouts_carry_cas_batch_and_counter_write_types() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY, v int)", &[])
        .await?;
    session
        .query_unpaged("CREATE TABLE c (k int PRIMARY KEY, n counter)", &[])
        .await?;
    let write_type = |r: Result<_, ExecutionError>| match r.as_ref().err().and_then(db_error) {
        Some(DbError::WriteTimeout { write_type, .. }) => Some(write_type.clone()),
        _ => None,
    };
    node.faults()
        .fail_writes(1, Fault::WriteTimeout { applied: true });
    let lwt = session
        .query_unpaged("INSERT INTO t (k, v) VALUES (1, 1) IF NOT EXISTS", &[])
        .await;
    assert_eq!(write_type(lwt.map(|_| ())), Some(DriverWriteType::Cas));
    node.faults()
        .fail_writes(1, Fault::WriteTimeout { applied: false });
    let counter = session
        .query_unpaged("UPDATE c SET n = n + 1 WHERE k = 1", &[])
        .await;
    assert_eq!(
        write_type(counter.map(|_| ())),
        Some(DriverWriteType::Counter)
    );
    node.faults()
        .fail_writes(1, Fault::WriteTimeout { applied: true });
    let mut batch = Batch::new(BatchType::Logged);
    batch.append_statement("INSERT INTO t (k, v) VALUES (2, 2)");
    let logged = session.batch(&batch, ((),)).await;
    assert_eq!(write_type(logged.map(|_| ())), Some(DriverWriteType::Batch));
    assert_eq!(node.row_count("ks", "t"), Some(2));
    Ok(())
}

#[tokio::test]
async fn default_retry_policy_retries_what_it_should() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY, v int)", &[])
        .await?;
    session
        .query_unpaged("INSERT INTO t (k, v) VALUES (1, 1)", &[])
        .await?;
    // A read timeout with enough replies but no data is retried once, on the same node.
    node.faults().fail_reads(
        1,
        Fault::ReadTimeout {
            received: 1,
            block_for: 1,
            data_present: false,
        },
    );
    node.clear_requests();
    let mut read = session.prepare("SELECT v FROM t WHERE k = ?").await?;
    read.set_is_idempotent(true);
    session.execute_unpaged(&read, (1_i32,)).await?;
    assert_eq!(node.request_count(StatementKind::Read), 2);
    // A read timeout with data present is not retried.
    node.faults().fail_reads(
        1,
        Fault::ReadTimeout {
            received: 0,
            block_for: 1,
            data_present: true,
        },
    );
    let err = session.execute_unpaged(&read, (1_i32,)).await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::ReadTimeout { .. })
        ),
        "{err:?}"
    );
    // An idempotent write timing out on the batch log is retried once.
    node.clear_requests();
    let mut write = session.prepare("UPDATE t SET v = ? WHERE k = ?").await?;
    write.set_is_idempotent(true);
    node.faults().fail_writes(
        1,
        Fault::WriteTimeoutOfType {
            write_type: WriteType::BatchLog,
            applied: false,
        },
    );
    session.execute_unpaged(&write, (5_i32, 1_i32)).await?;
    assert_eq!(node.request_count(StatementKind::Write), 2);
    // A plain SIMPLE write timeout is never retried, idempotent or not.
    node.faults()
        .fail_writes(1, Fault::WriteTimeout { applied: false });
    assert!(
        session
            .execute_unpaged(&write, (6_i32, 1_i32))
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn unavailable_overloaded_and_server_errors_reach_the_caller() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY, v int)", &[])
        .await?;
    let insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?)")
        .await?;
    node.faults().fail_writes(
        2,
        Fault::Unavailable {
            required: 2,
            alive: 1,
        },
    );
    let err = session.execute_unpaged(&insert, (1_i32, 1_i32)).await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::Unavailable { .. })
        ),
        "{err:?}"
    );
    node.faults().clear();
    node.faults().fail_writes(1, Fault::Overloaded);
    let err = session.execute_unpaged(&insert, (1_i32, 1_i32)).await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::Overloaded)
        ),
        "{err:?}"
    );
    node.faults()
        .add(FaultRule::new(Fault::ServerError).on(StatementKind::Ddl));
    let err = session
        .query_unpaged("CREATE TABLE u (k int PRIMARY KEY)", &[])
        .await;
    assert!(
        matches!(
            err.as_ref().err().and_then(db_error),
            Some(DbError::ServerError)
        ),
        "{err:?}"
    );
    assert_eq!(node.row_count("ks", "u"), None);
    Ok(())
}

#[tokio::test]
async fn invalid_and_unauthorized_are_answered_on_demand_and_never_resent() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY, v int)", &[])
        .await?;
    let mut insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?)")
        .await?;
    insert.set_is_idempotent(true);
    for (fault, expected) in [
        (Fault::Invalid, DbError::Invalid),
        (Fault::Unauthorized, DbError::Unauthorized),
    ] {
        node.clear_requests();
        let rule = node.faults().fail_writes(1, fault.clone());
        let err = session.execute_unpaged(&insert, (1_i32, 1_i32)).await;
        assert_eq!(
            err.as_ref().err().and_then(db_error),
            Some(&expected),
            "{fault:?}: {err:?}"
        );
        assert_eq!(node.faults().fired(rule), 1);
        assert_eq!(
            node.request_count(StatementKind::Write),
            1,
            "{fault:?}: sent once"
        );
        assert_eq!(node.row_count("ks", "t"), Some(0), "{fault:?}: not written");
    }
    Ok(())
}

#[tokio::test]
async fn dropped_connections_break_requests_and_the_driver_reconnects() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY, v int)", &[])
        .await?;
    let insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?)")
        .await?;
    // Dropped after applying: the caller sees a broken connection, the row is there.
    node.faults()
        .fail_writes(1, Fault::DropConnection { applied: true });
    let err = session.execute_unpaged(&insert, (1_i32, 1_i32)).await;
    assert!(
        matches!(
            err,
            Err(ExecutionError::LastAttemptError(
                RequestAttemptError::BrokenConnectionError(_)
            ))
        ),
        "{err:?}"
    );
    assert_eq!(node.row_count("ks", "t"), Some(1));
    // Every connection closed at once; the driver reconnects and later requests succeed.
    let before = node.accepted_connections();
    node.faults().drop_connections();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut k = 2_i32;
    loop {
        match session.execute_unpaged(&insert, (k, k)).await {
            Ok(_) if node.accepted_connections() > before => break,
            Ok(_) => k += 1,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert!(node.open_connections() > 0);
    Ok(())
}

#[tokio::test]
async fn injected_latency_trips_the_client_timeout() -> TestResult {
    let (node, session) = setup().await?;
    session
        .query_unpaged("CREATE TABLE t (k int PRIMARY KEY, v int)", &[])
        .await?;
    let rule = node.faults().add(
        FaultRule::new(Fault::Delay(Duration::from_millis(500)))
            .on(StatementKind::Read)
            .always(),
    );
    let mut read = session.prepare("SELECT v FROM t WHERE k = ?").await?;
    read.set_request_timeout(Some(Duration::from_millis(50)));
    let err = session.execute_unpaged(&read, (1_i32,)).await;
    assert!(
        matches!(err, Err(ExecutionError::RequestTimeout(_))),
        "{err:?}"
    );
    node.faults().remove(rule);
    session.execute_unpaged(&read, (1_i32,)).await?;
    // A delayed request does not hold up the others on the same connection.
    node.faults().add(
        FaultRule::new(Fault::Delay(Duration::from_secs(30)))
            .on(StatementKind::Read)
            .table("t")
            .times(1),
    );
    let slow = session.execute_unpaged(&read, (1_i32,));
    let fast = session.query_unpaged("INSERT INTO t (k, v) VALUES (1, 1)", &[]);
    tokio::select! {
        _ = slow => return Err("the delayed read finished first".into()),
        r = fast => { r?; }
    }
    Ok(())
}
