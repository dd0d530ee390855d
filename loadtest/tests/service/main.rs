//! Service tests: the generator against in-process axum servers on 127.0.0.1:0.
//!
//! The real server lives in another crate (`ingest`) and is tested against this generator end to end
//! by the workspace's own tests; here the servers are small stand-ins whose behaviour the tests
//! control exactly: a server that stalls on cue, and a fake of the HTTP contract.
//!
//! One binary for all of them, so the workspace links one test executable rather than one per file.

mod fake;
mod ledger_check;
mod schedule;
mod workload;

use std::net::SocketAddr;

/// Serves `app` on 127.0.0.1:0 in the background and returns its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}")
}
