//! `commit_doses` throughput through the ScyllaDB backend against the in-process CQL test node,
//! at in-flight limits of 4, 16, 64 and 256 entries per shard writer, twice: with the node
//! answering at once (loopback), and with every request answered 1 ms late (the node's injected
//! delay), about a round trip inside one datacenter.
//!
//! Run: `cargo bench -p vaxcamp-store --features scylla,conformance --bench scylla_driver`.
//!
//! What it says: at zero latency, the cost of our statement path and the driver on the client
//! (serialising, routing, the per-dose sequence journal → LWT claim → two row writes, the totals
//! batch); with 1 ms per request, how much the in-flight limit hides round trips, which is what
//! the limit is for: a dose's four sequential requests take ~4 ms whatever the CPU, so a shard
//! commits about `limit / 4 ms` doses per second until the CPU becomes the bound. What it does
//! not say: anything about a real cluster's capacity. The node answers from memory on the same
//! two cores as the client, does no Paxos rounds (a real LWT is four round trips between
//! replicas), no replication, no commit log or disk, and its delay is a fixed sleep, not a
//! distribution with a tail. Treat it as a regression guard for the client side and a picture of
//! the limit's effect, not as a sizing figure.
//!
//! A plain `main` (no criterion): each figure is one timed pass over fresh doses after a warm-up
//! pass, so setup (keyspace creation, statement preparation) stays out of the measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use vaxcamp_store::conformance::{sample_dose, sample_registration};
use vaxcamp_store::{Dose, ScyllaConfig, ScyllaStore, Store, shard_of};

const SHARDS: usize = 4;
const BATCH: usize = 500;
const DOSES: u32 = 20_000;

fn batches(from: u32, to: u32) -> Vec<(usize, Vec<Dose>)> {
    let mut by_shard: Vec<Vec<Dose>> = vec![Vec::new(); SHARDS];
    for n in from..to {
        let person = sample_registration(n).person_code;
        by_shard[shard_of(&person, SHARDS)].push(sample_dose(&person, 1));
    }
    by_shard
        .into_iter()
        .enumerate()
        .flat_map(|(shard, doses)| {
            doses
                .chunks(BATCH)
                .map(|c| (shard, c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Commits every batch, the shards in parallel and each shard's batches in order (one writer
/// per shard, as in the server).
async fn commit_all(store: &Arc<ScyllaStore>, batches: Vec<(usize, Vec<Dose>)>) {
    let mut per_shard: Vec<Vec<Vec<Dose>>> = vec![Vec::new(); SHARDS];
    for (shard, doses) in batches {
        per_shard[shard].push(doses);
    }
    futures_util::stream::iter(per_shard.into_iter().enumerate())
        .map(|(shard, list)| {
            let store = store.clone();
            async move {
                for doses in list {
                    if let Err(e) = store.commit_doses(shard, &doses).await {
                        eprintln!("commit failed: {e}");
                        std::process::exit(1);
                    }
                }
            }
        })
        .buffer_unordered(SHARDS)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let node = match cqlnode::CqlNode::start(cqlnode::NodeConfig::default()).await {
        Ok(node) => node,
        Err(e) => {
            eprintln!("could not start the CQL test node: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "commit_doses against the CQL test node: {DOSES} doses, {SHARDS} shards, batches of {BATCH}"
    );
    let mut run = 0;
    for delay in [Duration::ZERO, Duration::from_millis(1)] {
        println!("every request answered {} ms late:", delay.as_millis());
        for limit in [4usize, 16, 64, 256] {
            run += 1;
            let config = ScyllaConfig {
                nodes: vec![node.addr().to_string()],
                keyspace: format!("bench_{}_{run}", std::process::id()),
                replication_factor: 1,
                shards: SHARDS,
                people_buckets: 16,
                max_in_flight_per_shard: limit,
                ..ScyllaConfig::default()
            };
            // Set-up at full speed; the delay applies to the warm-up and the measured pass.
            let store = match ScyllaStore::connect(config).await {
                Ok(store) => Arc::new(store),
                Err(e) => {
                    eprintln!("connect failed: {e}");
                    std::process::exit(1);
                }
            };
            let latency = (!delay.is_zero()).then(|| node.faults().delay_all(delay));
            // Warm-up: connections, caches, the node's tables.
            commit_all(&store, batches(1_000_000, 1_002_000)).await;
            let work = batches(0, DOSES);
            let started = Instant::now();
            commit_all(&store, work).await;
            let elapsed = started.elapsed();
            if let Some(rule) = latency {
                node.faults().remove(rule);
            }
            let rate = f64::from(DOSES) / elapsed.as_secs_f64();
            println!(
                "  in-flight {limit:>3} per shard: {rate:>8.0} doses/s ({:.2} s)",
                elapsed.as_secs_f64()
            );
            let _ = store.close().await;
        }
    }
}
