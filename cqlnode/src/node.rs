//! The public face: [`NodeConfig`], [`CqlNode`] (start, address, inspection, shutdown) and the
//! request log tests read to assert what the driver sent.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::db::{Database, NodeInfo};
use crate::engine::{Engine, Outcome, Paging};
use crate::error::Error;
use crate::faults::{Faults, StatementKind};
use crate::value::Value;

/// Username and password checked by `PasswordAuthenticator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Whether the node knows ScyllaDB's tablets, the data distribution ScyllaDB 6.0 and later use
/// by default for new `NetworkTopologyStrategy` keyspaces, and in which (before LWT support for
/// tablets arrived) lightweight transactions are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tablets {
    /// As ScyllaDB 6.x: `CREATE KEYSPACE ... AND tablets = {'enabled': false}` (or `true`,
    /// `'initial': n`) is accepted; a `NetworkTopologyStrategy` keyspace created without
    /// `'enabled': false` uses tablets, and a conditional statement (LWT) on one of its tables
    /// is refused with *Invalid*. `system.local.supported_features` lists `TABLETS` and
    /// `system_schema.scylla_keyspaces` has `initial_tablets` set for tablet keyspaces.
    DefaultOn,
    /// As Cassandra and ScyllaDB before 6.0: the `tablets` option is a syntax error
    /// (*Unknown property 'tablets'*); there is no `supported_features` column and no
    /// `system_schema.scylla_keyspaces` table.
    Unknown,
}

/// How a node presents itself. Defaults: listen on `127.0.0.1:0`, datacenter `datacenter1`,
/// rack `rack1`, cluster `vaxcamp-test`, release `3.0.8`, one token (0), a random host id, no
/// authentication, tablets as ScyllaDB 6 ([`Tablets::DefaultOn`]).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub datacenter: String,
    pub rack: String,
    pub cluster_name: String,
    pub release_version: String,
    pub tokens: Vec<i64>,
    pub host_id: Uuid,
    /// When set, `STARTUP` is answered with `AUTHENTICATE` and only these credentials pass.
    pub credentials: Option<Credentials>,
    /// Whether `CREATE KEYSPACE` knows the `tablets` option, and what it defaults to.
    pub tablets: Tablets,
    /// When set, the node speaks CQL over TLS only, presenting this identity (feature `tls`).
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsIdentity>,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            datacenter: "datacenter1".into(),
            rack: "rack1".into(),
            cluster_name: "vaxcamp-test".into(),
            release_version: "3.0.8".into(),
            tokens: vec![0],
            host_id: Uuid::new_v4(),
            credentials: None,
            tablets: Tablets::DefaultOn,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl NodeConfig {
    /// Requires `PasswordAuthenticator` login with these credentials.
    pub fn with_credentials(mut self, username: &str, password: &str) -> NodeConfig {
        self.credentials = Some(Credentials {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Serves CQL over TLS only, presenting this certificate chain and key (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, identity: crate::tls::TlsIdentity) -> NodeConfig {
        self.tls = Some(identity);
        self
    }

    /// Behaves as Cassandra or a ScyllaDB before 6.0: the `tablets` keyspace option is refused.
    pub fn without_tablets(mut self) -> NodeConfig {
        self.tablets = Tablets::Unknown;
        self
    }

    pub fn with_datacenter(mut self, datacenter: &str) -> NodeConfig {
        self.datacenter = datacenter.into();
        self
    }
}

/// A consistency level as sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consistency {
    Any,
    One,
    Two,
    Three,
    Quorum,
    All,
    LocalQuorum,
    EachQuorum,
    Serial,
    LocalSerial,
    LocalOne,
    /// A code outside the spec.
    Other(u16),
}

impl Consistency {
    pub(crate) fn from_code(code: u16) -> Consistency {
        match code {
            0 => Consistency::Any,
            1 => Consistency::One,
            2 => Consistency::Two,
            3 => Consistency::Three,
            4 => Consistency::Quorum,
            5 => Consistency::All,
            6 => Consistency::LocalQuorum,
            7 => Consistency::EachQuorum,
            8 => Consistency::Serial,
            9 => Consistency::LocalSerial,
            10 => Consistency::LocalOne,
            other => Consistency::Other(other),
        }
    }
}

/// One request as the node saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub kind: StatementKind,
    /// The statement text (for a batch, its statements joined with `"; "`).
    pub statement: String,
    /// `(keyspace, table)` of every table the request touches.
    pub tables: Vec<(String, String)>,
    /// `None` for `PREPARE`, which carries no consistency.
    pub consistency: Option<Consistency>,
    pub serial_consistency: Option<Consistency>,
    /// The page size asked for, if any.
    pub page_size: Option<i32>,
    /// Sent as a prepared statement: `EXECUTE` (or a `BATCH` whose statements are all prepared
    /// ids) rather than `QUERY` text. Always `false` for `PREPARE` itself.
    pub prepared: bool,
}

/// How many requests of the log to keep: enough for any test, bounded so a long soak cannot
/// grow memory without limit.
const LOG_CAPACITY: usize = 100_000;

/// State shared by the listener, every connection and the handle.
pub(crate) struct Shared {
    pub engine: Engine,
    pub faults: Faults,
    pub config: NodeConfig,
    /// Event queues of the connections that sent `REGISTER`; a closed queue is dropped on the
    /// next send.
    pub listeners: Mutex<Vec<mpsc::Sender<Vec<u8>>>>,
    pub log: Mutex<VecDeque<RequestRecord>>,
    pub open_connections: AtomicUsize,
    pub accepted_connections: AtomicUsize,
    /// TLS connections whose handshake failed (a plain-TCP client, a client that refused the
    /// certificate, a timeout).
    pub failed_handshakes: AtomicUsize,
    /// The TLS acceptor when `config.tls` is set.
    #[cfg(feature = "tls")]
    pub tls: Option<openssl::ssl::SslAcceptor>,
}

impl Shared {
    pub(crate) fn record(&self, record: RequestRecord) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record);
    }
}

/// A running node. Dropping it stops the listener and closes every connection, like
/// [`CqlNode::shutdown`] without waiting.
pub struct CqlNode {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Set to `true` to stop: the accept loop and every connection watch it.
    shutdown: watch::Sender<bool>,
    accept_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CqlNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlNode").field("addr", &self.addr).finish()
    }
}

impl CqlNode {
    /// Binds the listener and starts serving.
    ///
    /// # Errors
    /// When the listen address cannot be bound.
    pub async fn start(config: NodeConfig) -> Result<CqlNode, Error> {
        #[cfg(feature = "tls")]
        let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::LocalAddr)?;
        let db = Database::new(NodeInfo {
            address: addr.ip(),
            datacenter: config.datacenter.clone(),
            rack: config.rack.clone(),
            cluster_name: config.cluster_name.clone(),
            host_id: config.host_id,
            release_version: config.release_version.clone(),
            tokens: config.tokens.clone(),
            tablets: config.tablets,
        });
        let shared = Arc::new(Shared {
            engine: Engine::new(db),
            faults: Faults::new(),
            config,
            listeners: Mutex::new(Vec::new()),
            log: Mutex::new(VecDeque::new()),
            open_connections: AtomicUsize::new(0),
            accepted_connections: AtomicUsize::new(0),
            failed_handshakes: AtomicUsize::new(0),
            #[cfg(feature = "tls")]
            tls,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_task = tokio::spawn(crate::server::accept_loop(
            listener,
            Arc::clone(&shared),
            shutdown_rx,
        ));
        Ok(CqlNode {
            addr,
            shared,
            shutdown,
            accept_task: Some(accept_task),
        })
    }

    /// The address to give the driver (`SessionBuilder::known_node_addr`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fault injection handle.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The host id reported in `system.local`.
    pub fn host_id(&self) -> Uuid {
        self.shared.config.host_id
    }

    /// The current schema version (changes on every schema change).
    pub fn schema_version(&self) -> Uuid {
        self.shared.engine.with_db(|db| db.schema_version)
    }

    /// Rows in a user table, or `None` if it does not exist.
    pub fn row_count(&self, keyspace: &str, table: &str) -> Option<usize> {
        self.shared.engine.with_db(|db| {
            db.keyspaces
                .get(keyspace)?
                .tables
                .get(table)
                .map(|t| t.row_count())
        })
    }

    /// Every row of a user table in token then clustering order, as column name → value
    /// (null cells left out), or `None` if it does not exist.
    pub fn rows(&self, keyspace: &str, table: &str) -> Option<Vec<BTreeMap<String, Value>>> {
        self.shared.engine.with_db(|db| {
            let table = db.keyspaces.get(keyspace)?.tables.get(table)?;
            let columns = &table.schema.columns;
            Some(
                table
                    .partitions
                    .values()
                    .flat_map(|p| p.rows.values())
                    .map(|row| {
                        columns
                            .iter()
                            .zip(row)
                            .filter_map(|(c, v)| v.clone().map(|v| (c.name.clone(), v)))
                            .collect()
                    })
                    .collect(),
            )
        })
    }

    /// Runs one CQL statement directly (no driver, no faults, not logged): for test set-up and
    /// inspection. Returns the rows of a `SELECT` (empty for other statements).
    ///
    /// # Errors
    /// The statement's error, as text.
    pub fn execute(
        &self,
        keyspace: Option<&str>,
        cql: &str,
    ) -> Result<Vec<Vec<Option<Value>>>, Error> {
        let parsed = crate::cql::parse(cql).map_err(|e| Error::Statement(e.to_string()))?;
        let outcome = self
            .shared
            .engine
            .run(&parsed, keyspace, &[], &Paging::default())
            .map_err(|e| Error::Statement(e.to_string()))?;
        if let Outcome::SchemaChange(change) = &outcome {
            crate::server::broadcast_schema_change(&self.shared, change);
        }
        Ok(match outcome {
            Outcome::Rows(rows) => rows.rows,
            _ => Vec::new(),
        })
    }

    /// Every request seen so far (oldest first; the log keeps the last 100 000).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Requests of one kind seen so far.
    pub fn request_count(&self, kind: StatementKind) -> usize {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r.kind == kind)
            .count()
    }

    /// The consistency of the last request of this kind that carried one.
    pub fn last_consistency(&self, kind: StatementKind) -> Option<Consistency> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .filter(|r| r.kind == kind)
            .find_map(|r| r.consistency)
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Forgets every prepared statement: the next `EXECUTE`s get `UNPREPARED` and the driver
    /// re-prepares (as after a real node restart).
    pub fn forget_prepared(&self) {
        self.shared.engine.forget_prepared();
    }

    /// Client connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed since start (always 0 without TLS).
    pub fn failed_tls_handshakes(&self) -> usize {
        self.shared.failed_handshakes.load(Ordering::SeqCst)
    }

    /// Client connections accepted since start (over TLS: those whose handshake succeeded).
    pub fn accepted_connections(&self) -> usize {
        self.shared.accepted_connections.load(Ordering::SeqCst)
    }

    /// Stops listening, closes every connection, and waits for the listener task to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for CqlNode {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
