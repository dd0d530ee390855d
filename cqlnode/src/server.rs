//! The network side: the accept loop, one task per connection reading frames, one task per
//! request (so a delayed request does not hold up the others multiplexed on the connection, as
//! on a real node), and the encoding of every response.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tracing::debug;

use crate::cql::{BatchKind, Parsed, Statement};
use crate::db::is_system_keyspace;
use crate::engine::{BatchItem, ColSpec, Outcome, Paging, PreparedMeta, Rows, SchemaChange};
use crate::error::{DbError, WriteType};
use crate::faults::{Fault, StatementKind};
use crate::node::{Consistency, RequestRecord, Shared};
use crate::wire::{self, Header, RawValue, Reader, Writer, opcode};

/// Frames waiting to be written on one connection. Filled by request tasks and schema events,
/// drained by the connection's writer task; when full (the client stopped reading) senders wait.
const OUTBOX: usize = 1024;

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(%peer, "connection accepted");
                    let _ = stream.set_nodelay(true);
                    #[cfg(feature = "tls")]
                    if let Some(acceptor) = &shared.tls {
                        tokio::spawn(tls_connection(
                            acceptor.clone(),
                            stream,
                            peer,
                            Arc::clone(&shared),
                            shutdown.clone(),
                        ));
                        continue;
                    }
                    let (reader, writer) = stream.into_split();
                    tokio::spawn(connection(reader, writer, Arc::clone(&shared), shutdown.clone()));
                }
                Err(error) => debug!(%error, "accept failed"),
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// How long a client has to finish the TLS handshake.
#[cfg(feature = "tls")]
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A TLS connection: the handshake (in the connection's own task, so that a slow or plain-TCP
/// client does not hold up the accept loop), then the same frame loop as over plain TCP. A
/// failed handshake closes the connection without a CQL answer.
#[cfg(feature = "tls")]
async fn tls_connection(
    acceptor: openssl::ssl::SslAcceptor,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let stream = openssl::ssl::Ssl::new(acceptor.context())
        .map_err(|e| e.to_string())
        .and_then(|ssl| tokio_openssl::SslStream::new(ssl, stream).map_err(|e| e.to_string()));
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(error) => {
            debug!(%peer, %error, "TLS setup failed");
            shared.failed_handshakes.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    let handshake =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, std::pin::Pin::new(&mut stream).accept()).await;
    match handshake {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            debug!(%peer, %error, "TLS handshake failed");
            shared.failed_handshakes.fetch_add(1, Ordering::SeqCst);
            return;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            shared.failed_handshakes.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
    let (reader, writer) = tokio::io::split(stream);
    connection(reader, writer, shared, shutdown).await;
}

/// Per-connection state shared with its request tasks.
struct Conn {
    /// The keyspace set by `USE`.
    keyspace: Mutex<Option<String>>,
    /// Notified by a request task that must drop the connection instead of answering.
    close: Notify,
    outbox: mpsc::Sender<Vec<u8>>,
}

impl Conn {
    fn keyspace(&self) -> Option<String> {
        self.keyspace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One client connection over any byte stream (plain TCP halves, or the halves of a TLS stream).
async fn connection<R, W>(
    mut reader: R,
    writer: W,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    shared.open_connections.fetch_add(1, Ordering::SeqCst);
    shared.accepted_connections.fetch_add(1, Ordering::SeqCst);
    let mut dropped = shared.faults.drop_signal();
    let (outbox, rx) = mpsc::channel(OUTBOX);
    let writer_task = tokio::spawn(write_loop(writer, rx));
    let conn = Arc::new(Conn {
        keyspace: Mutex::new(None),
        close: Notify::new(),
        outbox,
    });
    let mut authenticated = shared.config.credentials.is_none();
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader) => frame,
            _ = shutdown.changed() => break,
            _ = dropped.changed() => break,
            _ = conn.close.notified() => break,
        };
        let Ok(Some((header, body))) = frame else {
            break;
        };
        if header.version != wire::VERSION {
            let err = DbError::Protocol(format!(
                "Invalid or unsupported protocol version ({}); only v4 is supported",
                header.version & 0x7f
            ));
            let _ = conn
                .outbox
                .send(wire::response_frame(
                    header.stream,
                    opcode::ERROR,
                    &err.encode(),
                ))
                .await;
            continue;
        }
        if header.flags & wire::FLAG_COMPRESSION != 0 {
            let err = DbError::Protocol("compression was not negotiated".into());
            let _ = conn
                .outbox
                .send(wire::response_frame(
                    header.stream,
                    opcode::ERROR,
                    &err.encode(),
                ))
                .await;
            continue;
        }
        match header.opcode {
            opcode::OPTIONS | opcode::STARTUP | opcode::AUTH_RESPONSE | opcode::REGISTER => {
                let (op, body) = handshake(&shared, &conn, &header, &body, &mut authenticated);
                let _ = conn
                    .outbox
                    .send(wire::response_frame(header.stream, op, &body))
                    .await;
            }
            opcode::QUERY | opcode::PREPARE | opcode::EXECUTE | opcode::BATCH if authenticated => {
                tokio::spawn(request(
                    Arc::clone(&shared),
                    Arc::clone(&conn),
                    header,
                    body,
                ));
            }
            opcode::QUERY | opcode::PREPARE | opcode::EXECUTE | opcode::BATCH => {
                let err = DbError::Protocol("the connection is not authenticated".into());
                let _ = conn
                    .outbox
                    .send(wire::response_frame(
                        header.stream,
                        opcode::ERROR,
                        &err.encode(),
                    ))
                    .await;
            }
            other => {
                let err = DbError::Protocol(format!("unknown or unexpected opcode 0x{other:02x}"));
                let _ = conn
                    .outbox
                    .send(wire::response_frame(
                        header.stream,
                        opcode::ERROR,
                        &err.encode(),
                    ))
                    .await;
            }
        }
    }
    writer_task.abort();
    shared.open_connections.fetch_sub(1, Ordering::SeqCst);
}

async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = rx.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
    }
}

async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<(Header, Vec<u8>)>> {
    let mut head = [0u8; wire::HEADER_LEN];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let header = Header::parse(&head)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.0))?;
    let mut body = vec![0u8; header.length];
    reader.read_exact(&mut body).await?;
    Ok(Some((header, body)))
}

const PASSWORD_AUTHENTICATOR: &str = "org.apache.cassandra.auth.PasswordAuthenticator";

/// `OPTIONS`, `STARTUP`, `AUTH_RESPONSE`, `REGISTER`: answered in order on the connection task.
fn handshake(
    shared: &Shared,
    conn: &Arc<Conn>,
    header: &Header,
    body: &[u8],
    authenticated: &mut bool,
) -> (u8, Vec<u8>) {
    let mut r = Reader::new(body);
    let result: Result<(u8, Vec<u8>), DbError> = (|| match header.opcode {
        opcode::OPTIONS => {
            let mut w = Writer::new();
            // No COMPRESSION entries and no SCYLLA_* sharding keys: the driver then uses no
            // compression and treats this node as a plain Cassandra node.
            w.string_multimap(&[
                ("CQL_VERSION", vec!["3.4.4".to_string()]),
                ("COMPRESSION", vec![]),
                ("PROTOCOL_VERSIONS", vec!["4/v4".to_string()]),
            ]);
            Ok((opcode::SUPPORTED, w.buf))
        }
        opcode::STARTUP => {
            let options = r.string_map()?;
            if options.contains_key("COMPRESSION") {
                return Err(DbError::Protocol(
                    "compression is not supported by this test node".into(),
                ));
            }
            if shared.config.credentials.is_some() {
                let mut w = Writer::new();
                w.string(PASSWORD_AUTHENTICATOR);
                Ok((opcode::AUTHENTICATE, w.buf))
            } else {
                Ok((opcode::READY, Vec::new()))
            }
        }
        opcode::AUTH_RESPONSE => {
            let token = r.bytes()?.unwrap_or_default();
            let mut parts = token.split(|b| *b == 0).skip(1);
            let user = parts.next().unwrap_or_default();
            let password = parts.next().unwrap_or_default();
            let ok = shared.config.credentials.as_ref().is_some_and(|c| {
                c.username.as_bytes() == user && c.password.as_bytes() == password
            });
            if !ok {
                return Err(DbError::BadCredentials(
                    "Provided username and/or password are incorrect".into(),
                ));
            }
            *authenticated = true;
            let mut w = Writer::new();
            w.bytes(None);
            Ok((opcode::AUTH_SUCCESS, w.buf))
        }
        opcode::REGISTER => {
            let _events = r.string_list()?;
            shared
                .listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn.outbox.clone());
            Ok((opcode::READY, Vec::new()))
        }
        _ => Err(DbError::Protocol("unexpected handshake opcode".into())),
    })();
    match result {
        Ok(answer) => answer,
        Err(e) => (opcode::ERROR, e.encode()),
    }
}

/// The query parameters of `QUERY` and `EXECUTE`.
struct QueryParams {
    consistency: u16,
    values: Vec<RawValue>,
    skip_metadata: bool,
    page_size: Option<i32>,
    paging_state: Option<Vec<u8>>,
    serial_consistency: Option<u16>,
}

fn query_params(r: &mut Reader<'_>) -> Result<QueryParams, DbError> {
    let consistency = r.u16()?;
    let flags = r.u8()?;
    let mut values = Vec::new();
    if flags & 0x01 != 0 {
        let n = r.u16()?;
        for _ in 0..n {
            if flags & 0x40 != 0 {
                return Err(DbError::invalid(
                    "named values are not supported by this test node",
                ));
            }
            values.push(r.value()?);
        }
    }
    let page_size = if flags & 0x04 != 0 {
        Some(r.i32()?)
    } else {
        None
    };
    let paging_state = if flags & 0x08 != 0 { r.bytes()? } else { None };
    let serial_consistency = if flags & 0x10 != 0 {
        Some(r.u16()?)
    } else {
        None
    };
    if flags & 0x20 != 0 {
        r.i64()?;
    }
    Ok(QueryParams {
        consistency,
        values,
        skip_metadata: flags & 0x02 != 0,
        page_size,
        paging_state,
        serial_consistency,
    })
}

/// Kind and tables of a statement, for the log and fault matching.
fn classify(
    statement: &Statement,
    session: Option<&str>,
) -> (StatementKind, Vec<(String, String)>) {
    let tables = |s: &Statement| -> Vec<(String, String)> {
        s.table()
            .map(|t| {
                let ks = t
                    .keyspace
                    .clone()
                    .or_else(|| session.map(str::to_string))
                    .unwrap_or_default();
                (ks, t.name.clone())
            })
            .into_iter()
            .collect()
    };
    match statement {
        Statement::Select { .. } => {
            let t = tables(statement);
            let system = t.iter().any(|(ks, _)| is_system_keyspace(ks));
            (
                if system {
                    StatementKind::System
                } else {
                    StatementKind::Read
                },
                t,
            )
        }
        Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. } => {
            (StatementKind::Write, tables(statement))
        }
        Statement::Batch { statements, .. } => (
            StatementKind::Batch,
            statements.iter().flat_map(tables).collect(),
        ),
        Statement::Use { .. } => (StatementKind::System, Vec::new()),
        Statement::CreateKeyspace { name, .. } | Statement::DropKeyspace { name, .. } => {
            (StatementKind::Ddl, vec![(name.clone(), String::new())])
        }
        _ => (StatementKind::Ddl, tables(statement)),
    }
}

/// The `write_type` a real coordinator would report for this statement.
fn write_type_of(statement: &Statement) -> WriteType {
    match statement {
        Statement::Batch {
            kind: BatchKind::Logged,
            ..
        } => WriteType::Batch,
        Statement::Batch {
            kind: BatchKind::Unlogged,
            ..
        } => WriteType::UnloggedBatch,
        Statement::Batch {
            kind: BatchKind::Counter,
            ..
        } => WriteType::Counter,
        Statement::Insert {
            if_not_exists: true,
            ..
        } => WriteType::Cas,
        Statement::Update { condition, .. } | Statement::Delete { condition, .. }
            if condition.is_some() =>
        {
            WriteType::Cas
        }
        Statement::Update { assignments, .. }
            if assignments
                .iter()
                .any(|a| matches!(a, crate::cql::Assignment::Counter { .. })) =>
        {
            WriteType::Counter
        }
        _ => WriteType::Simple,
    }
}

/// What to do with a request after the fault rules spoke.
enum Plan {
    Run,
    /// Answer with this error without running.
    Fail(DbError),
    /// Run, then answer with this error instead of the result.
    RunThenFail(DbError),
    DropConnection {
        run: bool,
    },
    /// Answer with this error now, and run the statement when the test releases it
    /// (`Faults::release_late_writes`).
    RunLater(DbError),
}

fn plan_fault(fault: Option<Fault>, consistency: u16, write_type: WriteType) -> Plan {
    let Some(fault) = fault else { return Plan::Run };
    match fault {
        Fault::WriteTimeout { applied } | Fault::WriteTimeoutOfType { applied, .. } => {
            let write_type = match fault {
                Fault::WriteTimeoutOfType { write_type, .. } => write_type,
                _ => write_type,
            };
            let err = DbError::WriteTimeout {
                consistency,
                received: 0,
                block_for: 1,
                write_type,
            };
            if applied {
                Plan::RunThenFail(err)
            } else {
                Plan::Fail(err)
            }
        }
        Fault::ReadTimeout {
            received,
            block_for,
            data_present,
        } => Plan::Fail(DbError::ReadTimeout {
            consistency,
            received,
            block_for,
            data_present,
        }),
        Fault::Unavailable { required, alive } => Plan::Fail(DbError::Unavailable {
            consistency,
            required,
            alive,
        }),
        Fault::Overloaded => Plan::Fail(DbError::Overloaded(
            "Too many in flight hints (injected fault)".into(),
        )),
        Fault::ServerError => Plan::Fail(DbError::Server("injected server error".into())),
        Fault::Invalid => Plan::Fail(DbError::Invalid(
            "the statement is refused as it is (injected fault)".into(),
        )),
        Fault::Unauthorized => Plan::Fail(DbError::Unauthorized(
            "the role may not run this statement (injected fault)".into(),
        )),
        Fault::DropConnection { applied } => Plan::DropConnection { run: applied },
        Fault::LateWrite => Plan::RunLater(DbError::WriteTimeout {
            consistency,
            received: 0,
            block_for: 1,
            write_type,
        }),
        Fault::Delay(_) => Plan::Run,
    }
}

/// A decoded `QUERY`, `EXECUTE`, `PREPARE` or `BATCH`.
enum Work {
    Prepare(String),
    Statement {
        parsed: Arc<Parsed>,
        keyspace: Option<String>,
        text: String,
        params: QueryParams,
        /// Came as `EXECUTE` of a prepared id, not `QUERY` text.
        prepared: bool,
    },
    Batch {
        kind: BatchKind,
        items: Vec<BatchItem>,
        text: String,
        consistency: u16,
        serial: Option<u16>,
        /// Every statement of the batch was a prepared id.
        prepared: bool,
    },
}

fn decode_work(
    shared: &Shared,
    conn: &Conn,
    header: &Header,
    body: &[u8],
) -> Result<Work, DbError> {
    let mut r = Reader::new(body);
    if header.flags & wire::FLAG_CUSTOM_PAYLOAD != 0 {
        r.skip_bytes_map()?;
    }
    match header.opcode {
        opcode::PREPARE => Ok(Work::Prepare(r.long_string()?)),
        opcode::QUERY => {
            let text = r.long_string()?;
            let params = query_params(&mut r)?;
            let parsed = Arc::new(crate::cql::parse(&text)?);
            Ok(Work::Statement {
                parsed,
                keyspace: conn.keyspace(),
                text,
                params,
                prepared: false,
            })
        }
        opcode::EXECUTE => {
            let id = r.short_bytes()?;
            let params = query_params(&mut r)?;
            let entry = shared.engine.prepared(&id).ok_or(DbError::Unprepared(id))?;
            Ok(Work::Statement {
                parsed: Arc::clone(&entry.parsed),
                keyspace: entry.keyspace.clone().or_else(|| conn.keyspace()),
                text: entry.query.clone(),
                params,
                prepared: true,
            })
        }
        opcode::BATCH => {
            let kind = match r.u8()? {
                0 => BatchKind::Logged,
                1 => BatchKind::Unlogged,
                2 => BatchKind::Counter,
                other => return Err(DbError::Protocol(format!("invalid batch type {other}"))),
            };
            let n = r.u16()?;
            let mut items = Vec::with_capacity(usize::from(n));
            let mut texts = Vec::with_capacity(usize::from(n));
            let mut prepared = true;
            for _ in 0..n {
                let (parsed, keyspace, text) = match r.u8()? {
                    0 => {
                        prepared = false;
                        let text = r.long_string()?;
                        (Arc::new(crate::cql::parse(&text)?), conn.keyspace(), text)
                    }
                    1 => {
                        let id = r.short_bytes()?;
                        let entry = shared.engine.prepared(&id).ok_or(DbError::Unprepared(id))?;
                        (
                            Arc::clone(&entry.parsed),
                            entry.keyspace.clone().or_else(|| conn.keyspace()),
                            entry.query.clone(),
                        )
                    }
                    other => {
                        return Err(DbError::Protocol(format!(
                            "invalid batch statement kind {other}"
                        )));
                    }
                };
                let count = r.u16()?;
                let values = (0..count)
                    .map(|_| r.value())
                    .collect::<Result<Vec<_>, _>>()?;
                texts.push(text);
                items.push(BatchItem {
                    parsed,
                    keyspace,
                    values,
                });
            }
            let consistency = r.u16()?;
            let flags = r.u8()?;
            if flags & 0x40 != 0 {
                return Err(DbError::invalid(
                    "named values are not supported by this test node",
                ));
            }
            let serial = if flags & 0x10 != 0 {
                Some(r.u16()?)
            } else {
                None
            };
            Ok(Work::Batch {
                kind,
                items,
                text: texts.join("; "),
                consistency,
                serial,
                prepared,
            })
        }
        other => Err(DbError::Protocol(format!(
            "unexpected opcode 0x{other:02x}"
        ))),
    }
}

/// Handles one request on its own task and queues the answer (or drops the connection).
async fn request(shared: Arc<Shared>, conn: Arc<Conn>, header: Header, body: Vec<u8>) {
    let answer = handle(&shared, &conn, &header, &body).await;
    let frame = match answer {
        Some(Ok((op, body))) => wire::response_frame(header.stream, op, &body),
        Some(Err(e)) => wire::response_frame(header.stream, opcode::ERROR, &e.encode()),
        None => {
            conn.close.notify_one();
            return;
        }
    };
    let _ = conn.outbox.send(frame).await;
}

/// `None` means: drop the connection without answering.
async fn handle(
    shared: &Arc<Shared>,
    conn: &Conn,
    header: &Header,
    body: &[u8],
) -> Option<Result<(u8, Vec<u8>), DbError>> {
    let work = match decode_work(shared, conn, header, body) {
        Ok(work) => work,
        Err(e) => return Some(Err(e)),
    };
    match work {
        Work::Prepare(text) => {
            let keyspace = conn.keyspace();
            let (kind, tables) = match crate::cql::parse(&text) {
                Ok(parsed) => (
                    StatementKind::Prepare,
                    classify(&parsed.statement, keyspace.as_deref()).1,
                ),
                Err(_) => (StatementKind::Prepare, Vec::new()),
            };
            shared.record(RequestRecord {
                kind,
                statement: text.clone(),
                tables: tables.clone(),
                consistency: None,
                serial_consistency: None,
                page_size: None,
                prepared: false,
            });
            let decision = shared.faults.decide(kind, &tables);
            if !decision.delay.is_zero() {
                tokio::time::sleep(decision.delay).await;
            }
            match plan_fault(decision.fault, 1, WriteType::Simple) {
                Plan::Fail(e) | Plan::RunThenFail(e) | Plan::RunLater(e) => {
                    return Some(Err(e));
                }
                Plan::DropConnection { .. } => return None,
                Plan::Run => {}
            }
            Some(
                shared
                    .engine
                    .prepare(&text, keyspace.as_deref())
                    .map(|meta| (opcode::RESULT, encode_prepared(&meta))),
            )
        }
        Work::Statement {
            parsed,
            keyspace,
            text,
            params,
            prepared,
        } => {
            let (kind, tables) = classify(&parsed.statement, keyspace.as_deref());
            shared.record(RequestRecord {
                kind,
                statement: text,
                tables: tables.clone(),
                consistency: Some(Consistency::from_code(params.consistency)),
                serial_consistency: params.serial_consistency.map(Consistency::from_code),
                page_size: params.page_size,
                prepared,
            });
            let decision = shared.faults.decide(kind, &tables);
            if !decision.delay.is_zero() {
                tokio::time::sleep(decision.delay).await;
            }
            let plan = plan_fault(
                decision.fault,
                params.consistency,
                write_type_of(&parsed.statement),
            );
            let paging = Paging {
                page_size: params
                    .page_size
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| *n > 0),
                state: params.paging_state.clone(),
            };
            let run = || {
                shared
                    .engine
                    .run(&parsed, keyspace.as_deref(), &params.values, &paging)
            };
            let outcome = match plan {
                Plan::Run => run(),
                Plan::Fail(e) => return Some(Err(e)),
                Plan::RunThenFail(e) => {
                    if let Ok(Outcome::SchemaChange(change)) = run() {
                        broadcast_schema_change(shared, &change);
                    }
                    return Some(Err(e));
                }
                Plan::DropConnection { run: applied } => {
                    if applied && let Ok(Outcome::SchemaChange(change)) = run() {
                        broadcast_schema_change(shared, &change);
                    }
                    return None;
                }
                Plan::RunLater(e) => {
                    // Weak: a held write must not keep the node alive.
                    let (node, parsed) = (Arc::downgrade(shared), Arc::clone(&parsed));
                    let values = params.values.clone();
                    shared.faults.hold(Box::new(move || {
                        let Some(shared) = node.upgrade() else { return };
                        let late = shared.engine.run(
                            &parsed,
                            keyspace.as_deref(),
                            &values,
                            &Paging::default(),
                        );
                        if let Ok(Outcome::SchemaChange(change)) = late {
                            broadcast_schema_change(&shared, &change);
                        }
                    }));
                    return Some(Err(e));
                }
            };
            Some(outcome.map(|o| {
                match &o {
                    Outcome::SetKeyspace(ks) => {
                        *conn.keyspace.lock().unwrap_or_else(|p| p.into_inner()) = Some(ks.clone());
                    }
                    Outcome::SchemaChange(change) => broadcast_schema_change(shared, change),
                    _ => {}
                }
                (opcode::RESULT, encode_outcome(&o, params.skip_metadata))
            }))
        }
        Work::Batch {
            kind,
            items,
            text,
            consistency,
            serial,
            prepared,
        } => {
            let tables: Vec<(String, String)> = items
                .iter()
                .flat_map(|i| classify(&i.parsed.statement, i.keyspace.as_deref()).1)
                .collect();
            shared.record(RequestRecord {
                kind: StatementKind::Batch,
                statement: text,
                tables: tables.clone(),
                consistency: Some(Consistency::from_code(consistency)),
                serial_consistency: serial.map(Consistency::from_code),
                page_size: None,
                prepared,
            });
            let decision = shared.faults.decide(StatementKind::Batch, &tables);
            if !decision.delay.is_zero() {
                tokio::time::sleep(decision.delay).await;
            }
            let write_type = write_type_of(&Statement::Batch {
                kind,
                statements: Vec::new(),
            });
            let result = match plan_fault(decision.fault, consistency, write_type) {
                Plan::Run => shared.engine.batch(kind, &items),
                Plan::Fail(e) => Err(e),
                Plan::RunThenFail(e) => {
                    let _ = shared.engine.batch(kind, &items);
                    Err(e)
                }
                Plan::DropConnection { run } => {
                    if run {
                        let _ = shared.engine.batch(kind, &items);
                    }
                    return None;
                }
                Plan::RunLater(e) => {
                    let node = Arc::downgrade(shared);
                    shared.faults.hold(Box::new(move || {
                        if let Some(shared) = node.upgrade() {
                            let _ = shared.engine.batch(kind, &items);
                        }
                    }));
                    Err(e)
                }
            };
            Some(result.map(|o| (opcode::RESULT, encode_outcome(&o, false))))
        }
    }
}

/// Sends a `SCHEMA_CHANGE` event to every registered connection.
pub(crate) fn broadcast_schema_change(shared: &Shared, change: &SchemaChange) {
    let mut w = Writer::new();
    w.string("SCHEMA_CHANGE");
    write_schema_change(&mut w, change);
    let frame = wire::response_frame(-1, opcode::EVENT, &w.buf);
    let mut listeners = shared.listeners.lock().unwrap_or_else(|p| p.into_inner());
    // `try_send`: an event is advisory (the driver also refreshes after agreement), so a
    // listener whose queue is full misses it rather than blocking the statement.
    listeners.retain(|tx| {
        !matches!(
            tx.try_send(frame.clone()),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    });
}

fn write_schema_change(w: &mut Writer, change: &SchemaChange) {
    w.string(change.change);
    match &change.table {
        None => {
            w.string("KEYSPACE");
            w.string(&change.keyspace);
        }
        Some(table) => {
            w.string("TABLE");
            w.string(&change.keyspace);
            w.string(table);
        }
    }
}

/// Column specs of one table share a "global table spec".
fn write_specs(w: &mut Writer, columns: &[ColSpec]) {
    let global = columns.first().map(|f| {
        columns
            .iter()
            .all(|c| c.keyspace == f.keyspace && c.table == f.table)
    });
    if let Some(true) = global {
        w.string(&columns[0].keyspace);
        w.string(&columns[0].table);
    }
    for c in columns {
        if global != Some(true) {
            w.string(&c.keyspace);
            w.string(&c.table);
        }
        w.string(&c.name);
        c.ty.write_option(w);
    }
}

fn global_flag(columns: &[ColSpec]) -> i32 {
    let global = columns.first().is_some_and(|f| {
        columns
            .iter()
            .all(|c| c.keyspace == f.keyspace && c.table == f.table)
    });
    i32::from(global)
}

fn write_rows(w: &mut Writer, rows: &Rows, skip_metadata: bool) {
    w.i32(2);
    let mut flags = 0;
    if rows.paging_state.is_some() {
        flags |= 0x0002;
    }
    if skip_metadata {
        flags |= 0x0004;
    } else {
        flags |= global_flag(&rows.columns);
    }
    w.i32(flags);
    w.len_i32(rows.columns.len());
    if let Some(state) = &rows.paging_state {
        w.bytes(Some(state));
    }
    if !skip_metadata {
        write_specs(w, &rows.columns);
    }
    w.len_i32(rows.rows.len());
    for row in &rows.rows {
        for cell in row {
            match cell {
                Some(v) => w.bytes(Some(&v.encode())),
                None => w.bytes(None),
            }
        }
    }
}

fn encode_outcome(outcome: &Outcome, skip_metadata: bool) -> Vec<u8> {
    let mut w = Writer::new();
    match outcome {
        Outcome::Void => w.i32(1),
        Outcome::Rows(rows) => write_rows(&mut w, rows, skip_metadata),
        Outcome::SetKeyspace(ks) => {
            w.i32(3);
            w.string(ks);
        }
        Outcome::SchemaChange(change) => {
            w.i32(5);
            write_schema_change(&mut w, change);
        }
    }
    w.buf
}

fn encode_prepared(meta: &PreparedMeta) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(4);
    w.short_bytes(&meta.id);
    // Bind metadata: flags, column count, partition key indexes, specs.
    w.i32(global_flag(&meta.binds));
    w.len_i32(meta.binds.len());
    w.len_i32(meta.pk_indexes.len());
    for i in &meta.pk_indexes {
        w.u16(*i);
    }
    write_specs(&mut w, &meta.binds);
    // Result metadata: none for statements that return no rows.
    if meta.result.is_empty() {
        w.i32(0x0004);
        w.i32(0);
    } else {
        w.i32(global_flag(&meta.result));
        w.len_i32(meta.result.len());
        write_specs(&mut w, &meta.result);
    }
    w.buf
}
