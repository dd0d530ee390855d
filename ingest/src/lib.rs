//! The vaxcamp server: the authenticated HTTP API, the sharded write path that makes every
//! acknowledged dose durable, and certificates signed on demand.
//!
//! # Layout
//! - [`config`]: [`ServerConfig`], the file/env/flag settings and their defaults.
//! - [`server`]: building the state, serving, graceful shutdown in the right order.
//! - [`api`]: routes and handlers; [`error`]: the one JSON error shape.
//! - [`auth`]: bearer tokens (stored hashed) and roles.
//! - [`writer`]: the shard writers: bounded queues, group commit, ack after durability.
//! - [`rules`]: the vaccination rules (sequence, intervals, mixing, lots), pure.
//! - [`campaign`]: the catalogue in memory and stock counters.
//! - [`certificates`]: certificate content, signing, the rendered-QR cache.
//! - [`keystore`]: signing keys on disk (0600) and the published trust list.
//! - [`setup`]: init, sites, lots, tokens, shared by the CLI and the admin API.
//! - [`import`]: bulk import of registrations from CSV.
//! - [`metrics`]: Prometheus families and the dose latency histogram.
//! - [`feed`]: rows for the analytics outbox, built by the shard writers after each commit.
//! - [`live`]: live aggregates for the console, moved at commit time (no store scans).
//! - [`openapi`]: the API description served at `/openapi.json`.

// The OpenAPI document is one large `serde_json::json!` literal.
#![recursion_limit = "256"]

pub mod api;
pub mod areas;
pub mod auth;
pub mod campaign;
pub mod certificates;
pub mod config;
pub mod error;
pub mod feed;
pub mod import;
pub mod keystore;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod rules;
pub mod server;
pub mod setup;
pub mod writer;

pub use config::ServerConfig;
pub use server::{ServeError, build_state, run, serve, shutdown_signal};
