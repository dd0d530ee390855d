//! A CQL native protocol v4 test node: test support for CI, not product.
//!
//! No ScyllaDB or Cassandra binary can run in CI, yet the ScyllaDB store backend must be tested
//! with the real `scylla` driver. [`CqlNode`] is a small in-memory server that speaks enough of
//! the protocol and of CQL for that driver to connect, read cluster metadata, agree on schema,
//! prepare, execute, page and batch, and it can inject the faults a real cluster produces
//! (timeouts that may or may not have applied the write, unavailable replicas, overload,
//! dropped connections, latency). `README.md` lists exactly what is and is not implemented.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vaxcamp_cqlnode::Error> {
//! use vaxcamp_cqlnode::{CqlNode, Fault, NodeConfig};
//! let node = CqlNode::start(NodeConfig::default()).await?;
//! let _contact_point = node.addr(); // give it to `SessionBuilder::known_node_addr`
//! node.faults().fail_writes(1, Fault::WriteTimeout { applied: true });
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `node`: [`CqlNode`] and [`NodeConfig`]: start, inspect (rows, request log), shut down.
//! - `faults`: [`Faults`], [`FaultRule`], [`Fault`]: what to break, for which requests, how often.
//! - `server`: accept loop, connections, request decoding, response encoding, schema events.
//! - `engine`: statements against the database: restrictions, paging, LWT, counters, batches, DDL.
//! - `db`: keyspaces, tables, rows; the generated `system` and `system_schema` tables.
//! - `cql`: lexer and parser for the supported CQL subset.
//! - `value`: CQL types and values, their wire encoding and their order.
//! - `wire`: frame header and the protocol's primitive notations.
//! - [`murmur3`]: Cassandra's Murmur3 token, identical to the driver's.
//! - `tls` (feature `tls`): the TLS listener's identity and acceptor, and a throwaway test CA.
//!
//! # Invariants
//!
//! - Every statement runs under one lock on the database: single writes, lightweight
//!   transactions and whole batches are atomic with respect to each other.
//! - `system.local.schema_version` changes on every schema change and only then.
//! - Tokens are computed exactly as Cassandra's `Murmur3Partitioner` does, so the driver's
//!   token-aware routing and `token()` restrictions agree with where rows are.
#![deny(unsafe_code, clippy::unwrap_used)]

mod cql;
mod db;
mod engine;
mod error;
mod faults;
pub mod murmur3;
mod node;
mod server;
#[cfg(feature = "tls")]
pub mod tls;
mod value;
mod wire;

pub use error::{Error, WriteType};
pub use faults::{Fault, FaultRule, Faults, RuleId, StatementKind};
pub use node::{Consistency, CqlNode, Credentials, NodeConfig, RequestRecord, Tablets};
pub use value::Value;
