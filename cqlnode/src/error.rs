//! Errors: the public [`Error`] of the node's API, and [`DbError`], everything that becomes a
//! CQL `ERROR` frame (the driver maps each code to its own `DbError` variant, so the codes and
//! extra fields must be exactly those of the spec, section 9).

use crate::wire::Writer;

/// Errors of the public API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listener could not be bound (the node always binds `127.0.0.1:0` unless told otherwise).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The listener's local address could not be read.
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// A statement given to a test helper (such as [`crate::CqlNode::execute`]) failed.
    #[error("statement failed: {0}")]
    Statement(String),
    /// The TLS identity or a test certificate could not be made or loaded (feature `tls`).
    #[error("TLS: {0}")]
    Tls(String),
}

/// The `write_type` of a write timeout: tells the driver (and the application) what kind of
/// write timed out, which decides whether retrying is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteType {
    Simple,
    Batch,
    UnloggedBatch,
    Counter,
    BatchLog,
    Cas,
}

impl WriteType {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteType::Simple => "SIMPLE",
            WriteType::Batch => "BATCH",
            WriteType::UnloggedBatch => "UNLOGGED_BATCH",
            WriteType::Counter => "COUNTER",
            WriteType::BatchLog => "BATCH_LOG",
            WriteType::Cas => "CAS",
        }
    }
}

/// An error answered to a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    #[error("server error: {0}")]
    Server(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("bad credentials: {0}")]
    BadCredentials(String),
    #[error("unavailable")]
    Unavailable {
        consistency: u16,
        required: i32,
        alive: i32,
    },
    #[error("overloaded: {0}")]
    Overloaded(String),
    #[error("write timeout")]
    WriteTimeout {
        consistency: u16,
        received: i32,
        block_for: i32,
        write_type: WriteType,
    },
    #[error("read timeout")]
    ReadTimeout {
        consistency: u16,
        received: i32,
        block_for: i32,
        data_present: bool,
    },
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("configuration error: {0}")]
    Config(String),
    #[error("already exists: {message}")]
    AlreadyExists {
        keyspace: String,
        table: String,
        message: String,
    },
    #[error("unprepared statement")]
    Unprepared(Vec<u8>),
}

impl DbError {
    pub fn invalid(message: impl Into<String>) -> DbError {
        DbError::Invalid(message.into())
    }

    /// The body of the `ERROR` frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            DbError::Server(m) => {
                w.i32(0x0000);
                w.string(m);
            }
            DbError::Protocol(m) => {
                w.i32(0x000A);
                w.string(m);
            }
            DbError::BadCredentials(m) => {
                w.i32(0x0100);
                w.string(m);
            }
            DbError::Unavailable {
                consistency,
                required,
                alive,
            } => {
                w.i32(0x1000);
                w.string("Cannot achieve consistency level (injected fault)");
                w.u16(*consistency);
                w.i32(*required);
                w.i32(*alive);
            }
            DbError::Overloaded(m) => {
                w.i32(0x1001);
                w.string(m);
            }
            DbError::WriteTimeout {
                consistency,
                received,
                block_for,
                write_type,
            } => {
                w.i32(0x1100);
                w.string("Operation timed out - received only 0 responses (injected fault)");
                w.u16(*consistency);
                w.i32(*received);
                w.i32(*block_for);
                w.string(write_type.as_str());
            }
            DbError::ReadTimeout {
                consistency,
                received,
                block_for,
                data_present,
            } => {
                w.i32(0x1200);
                w.string("Operation timed out (injected fault)");
                w.u16(*consistency);
                w.i32(*received);
                w.i32(*block_for);
                w.u8(u8::from(*data_present));
            }
            DbError::Syntax(m) => {
                w.i32(0x2000);
                w.string(m);
            }
            DbError::Unauthorized(m) => {
                w.i32(0x2100);
                w.string(m);
            }
            DbError::Invalid(m) => {
                w.i32(0x2200);
                w.string(m);
            }
            DbError::Config(m) => {
                w.i32(0x2300);
                w.string(m);
            }
            DbError::AlreadyExists {
                keyspace,
                table,
                message,
            } => {
                w.i32(0x2400);
                w.string(message);
                w.string(keyspace);
                w.string(table);
            }
            DbError::Unprepared(id) => {
                w.i32(0x2500);
                w.string("Prepared query with this id not found, re-prepare it");
                w.short_bytes(id);
            }
        }
        w.buf
    }
}

impl From<crate::cql::SyntaxError> for DbError {
    fn from(e: crate::cql::SyntaxError) -> DbError {
        DbError::Syntax(e.0)
    }
}

impl From<crate::wire::WireError> for DbError {
    fn from(e: crate::wire::WireError) -> DbError {
        DbError::Protocol(e.0)
    }
}
