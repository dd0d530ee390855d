//! TLS to ScyllaDB (feature `scylla-tls`) against the CQL test node's TLS listener, with the real
//! driver. Every certificate is made in memory for the test (`cqlnode::tls::TestCa`).
//!
//! Run: `cargo test -p vaxcamp-store --features scylla-tls --test scylla_tls`.
//!
//! The node speaks CQL over TLS only, and `a_plain_client_is_not_answered` shows it: so the
//! stores that work here really went through TLS, with the node's certificate verified.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cqlnode::tls::TestCa;
use cqlnode::{CqlNode, NodeConfig};
use vaxcamp_store::conformance::{run_all, sample_dose, sample_registration};
use vaxcamp_store::{ScyllaConfig, ScyllaStore, Store, StoreError, shard_of};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// However a connection fails, it must fail well before this (no hang).
const PATIENCE: Duration = Duration::from_secs(30);

static KEYSPACES: AtomicU32 = AtomicU32::new(0);

/// A TLS-only test node with a certificate for `ips` from a new CA, and that CA's certificate in
/// a file.
struct TlsNode {
    node: CqlNode,
    ca: TestCa,
    ca_file: PathBuf,
    dir: tempfile::TempDir,
}

async fn tls_node(ips: &[IpAddr]) -> TlsNode {
    let ca = TestCa::new("vaxcamp test cluster CA").expect("CA");
    let identity = ca.issue_server(ips).expect("server certificate");
    let node = CqlNode::start(NodeConfig::default().with_tls(identity))
        .await
        .expect("start the TLS test node");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write_ca(dir.path(), "ca.pem", &ca);
    TlsNode {
        node,
        ca,
        ca_file,
        dir,
    }
}

fn write_ca(dir: &Path, name: &str, ca: &TestCa) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, ca.cert_pem().expect("CA PEM")).expect("write the CA file");
    path
}

impl TlsNode {
    /// A config for a fresh keyspace on this node, TLS on, trusting `ca_file`.
    fn config(&self, ca_file: &Path) -> ScyllaConfig {
        ScyllaConfig {
            nodes: vec![self.node.addr().to_string()],
            keyspace: format!(
                "vaxcamp_tls{}_{}",
                std::process::id(),
                KEYSPACES.fetch_add(1, Ordering::Relaxed)
            ),
            replication_factor: 1,
            shards: 4,
            people_buckets: 16,
            max_in_flight_per_shard: 32,
            request_timeout: Duration::from_secs(2),
            tls: true,
            tls_ca_file: Some(ca_file.to_owned()),
            ..ScyllaConfig::default()
        }
    }
}

async fn connect(config: ScyllaConfig) -> ScyllaStore {
    ScyllaStore::connect(config)
        .await
        .expect("connect over TLS")
}

/// `connect`'s failure, which must come quickly.
async fn refused(config: ScyllaConfig) -> StoreError {
    match tokio::time::timeout(PATIENCE, ScyllaStore::connect(config)).await {
        Ok(Ok(_)) => panic!("connected, but it should have been refused"),
        Ok(Err(error)) => error,
        Err(_) => panic!("connect hung for {PATIENCE:?} instead of failing"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_over_tls_records_and_reads_back() {
    let tls = tls_node(&[LOCALHOST]).await;
    let store = connect(tls.config(&tls.ca_file)).await;

    let person = sample_registration(7);
    store.register(&person).await.expect("register");
    let dose = sample_dose(&person.person_code, 1);
    store
        .commit_doses(
            shard_of(&person.person_code, 4),
            std::slice::from_ref(&dose),
        )
        .await
        .expect("commit a dose");
    assert_eq!(
        store.person(&person.person_code).await.expect("person"),
        Some(person.clone())
    );
    assert_eq!(
        store.doses_of(&person.person_code).await.expect("doses"),
        vec![dose]
    );
    assert_eq!(store.totals().await.expect("totals").doses, 1);

    assert!(tls.node.accepted_connections() > 0);
    assert_eq!(
        tls.node.failed_tls_handshakes(),
        0,
        "every connection of the store completed the TLS handshake"
    );
    drop(store);
    tls.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tls() {
    let tls = tls_node(&[LOCALHOST]).await;
    let tls = &tls;
    run_all(|| async move { Arc::new(connect(tls.config(&tls.ca_file)).await) as Arc<dyn Store> })
        .await;
    assert_eq!(tls.node.failed_tls_handshakes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_is_not_answered() {
    // What makes the other tests mean something: the node does not speak plain CQL.
    let tls = tls_node(&[LOCALHOST]).await;
    let plain = ScyllaConfig {
        tls: false,
        tls_ca_file: None,
        ..tls.config(&tls.ca_file)
    };
    let error = refused(plain).await;
    assert!(
        matches!(error, StoreError::Unavailable(_)),
        "expected the node to be unreachable without TLS, got {error:?}"
    );
    assert!(tls.node.failed_tls_handshakes() > 0);
    assert_eq!(tls.node.accepted_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_signed_by_another_ca_is_refused() {
    let tls = tls_node(&[LOCALHOST]).await;
    let other = TestCa::new("somebody else's CA").expect("CA");
    let wrong_ca = write_ca(tls.dir.path(), "other-ca.pem", &other);
    let error = refused(tls.config(&wrong_ca)).await;
    let StoreError::Unavailable(message) = &error else {
        panic!("expected the cluster to be unreachable, got {error:?}");
    };
    assert!(message.contains("certificate verify failed"), "{message}");
    assert!(message.contains("TLS is on"), "{message}");
    assert!(
        message.contains(&wrong_ca.display().to_string()),
        "the message names the CA file: {message}"
    );
    assert_eq!(tls.node.accepted_connections(), 0);
    // The right CA still works on the same node.
    drop(connect(tls.config(&tls.ca_file)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_the_nodes_address_is_refused() {
    // Signed by the trusted CA, but for 127.0.0.2: the driver checks the node's IP address.
    let tls = tls_node(&[IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))]).await;
    let error = refused(tls.config(&tls.ca_file)).await;
    let StoreError::Unavailable(message) = &error else {
        panic!("expected the cluster to be unreachable, got {error:?}");
    };
    assert!(message.contains("certificate verify failed"), "{message}");
    assert_eq!(tls.node.accepted_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_or_bad_ca_file_is_refused_before_connecting() {
    let tls = tls_node(&[LOCALHOST]).await;
    let missing = tls.dir.path().join("no-such-ca.pem");
    match refused(tls.config(&missing)).await {
        StoreError::Engine(message) => {
            assert!(
                message.contains("cannot read the ScyllaDB CA file"),
                "{message}"
            );
            assert!(
                message.contains(&missing.display().to_string()),
                "{message}"
            );
        }
        other => panic!("expected a CA file error, got {other:?}"),
    }

    let garbage = tls.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("write");
    match refused(tls.config(&garbage)).await {
        StoreError::Engine(message) => {
            assert!(
                message.contains("is not a PEM certificate file"),
                "{message}"
            );
            assert!(
                message.contains(&garbage.display().to_string()),
                "{message}"
            );
        }
        other => panic!("expected a CA file error, got {other:?}"),
    }

    let truncated = tls.dir.path().join("truncated.pem");
    let pem = tls.ca.cert_pem().expect("PEM");
    std::fs::write(&truncated, &pem[..pem.len() / 2]).expect("write");
    match refused(tls.config(&truncated)).await {
        StoreError::Engine(message) => {
            assert!(
                message.contains("is not a PEM certificate file"),
                "{message}"
            )
        }
        other => panic!("expected a CA file error, got {other:?}"),
    }
    assert_eq!(
        tls.node.accepted_connections() + tls.node.failed_tls_handshakes(),
        0,
        "nothing was sent to the node"
    );
}
