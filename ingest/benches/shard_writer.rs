//! Durable dose commits through the shard writer, against the raw engine's own batch writes.
//!
//! `cargo bench -p vaxcamp-ingest --bench shard_writer`
//!
//! - `raw_engine/N`: fjall alone: a write batch of N encoded doses into one keyspace, fdatasync'd.
//!   The ceiling for durable writes on this disk.
//! - `shard_writer/N`: the real write path (one shard): N doses submitted to the queue as one job,
//!   checked against each person's history and the lot's stock, written with their id index and
//!   counters in one fdatasync'd batch, answered after the commit.
//!
//! Every dose is new and valid (people get up to three doses of a bench-only product with no
//! minimum interval), so nothing is skipped as a duplicate or refused. Setup (registrations,
//! dose generation) stays outside the measured time.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use store::*;
use time::macros::{date, datetime};
use vaxcamp_ingest::campaign::Campaign;
use vaxcamp_ingest::metrics::Metrics;
use vaxcamp_ingest::writer::{DoseOutcome, WritePath, WriterConfig};

/// The same allocator as the `vaxcamp` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// People registered for the bench. Each gets at most ROUNDS doses, so histories stay as short
/// as a real campaign's (a first dose, then a second and third).
const PEOPLE: u32 = 600_000;
/// Doses in the bench product's series: PEOPLE × ROUNDS valid doses in all.
const ROUNDS: u8 = 3;
const BATCHES: [usize; 3] = [1, 100, 1000];

fn dose(person: u32, dose_number: u8) -> Dose {
    Dose {
        dose_id: DoseId(uuid::Uuid::new_v4()),
        person_code: PersonCode::new(format!("B{person:08}")).unwrap(),
        product: ProductCode::new("BENCH10").unwrap(),
        lot_number: LotNumber::new("BL1").unwrap(),
        dose_number,
        site_id: SiteId::new("bench-site").unwrap(),
        vaccinator: "nurse-1".into(),
        administered_at: datetime!(2026-11-01 08:00 UTC),
        recorded_at: datetime!(2026-11-01 08:00 UTC),
    }
}

/// Hands out (person, next dose number) pairs so every generated dose is valid.
struct Doses {
    next: u64,
}

impl Doses {
    /// `n` doses that the write path accepts: nobody gets more than ROUNDS doses.
    fn take(&mut self, n: usize) -> Vec<Dose> {
        (0..n)
            .map(|_| {
                let round = self.next / u64::from(PEOPLE) + 1;
                assert!(
                    round <= u64::from(ROUNDS),
                    "the bench ran out of valid doses; raise PEOPLE or ROUNDS"
                );
                self.any()
            })
            .collect()
    }

    /// A fresh dose with no validity promise (the raw engine does not check rules).
    fn any(&mut self) -> Dose {
        let person = (self.next % u64::from(PEOPLE)) as u32;
        let round = (self.next / u64::from(PEOPLE)) % u64::from(u8::MAX) + 1;
        self.next += 1;
        dose(person, round as u8)
    }
}

fn raw_engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_engine");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for batch in BATCHES {
        let dir = tempfile::tempdir().unwrap();
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let keyspace = db
            .keyspace("doses", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let mut doses = Doses { next: 0 };
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let prepared: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..iters)
                    .map(|_| {
                        (0..batch)
                            .map(|_| doses.any())
                            .map(|d| {
                                let mut key = d.person_code.as_str().as_bytes().to_vec();
                                key.push(0);
                                key.extend_from_slice(d.dose_id.0.as_bytes());
                                let mut value = vec![1u8];
                                value.extend(postcard::to_allocvec(&d).unwrap());
                                (key, value)
                            })
                            .collect()
                    })
                    .collect();
                let started = Instant::now();
                for rows in prepared {
                    let mut write = db.batch().durability(Some(fjall::PersistMode::SyncData));
                    for (key, value) in rows {
                        write.insert(&keyspace, key, value);
                    }
                    write.commit().unwrap();
                }
                started.elapsed()
            });
        });
    }
    group.finish();
}

fn shard_writer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("shard_writer");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for batch in BATCHES {
        let dir = tempfile::tempdir().unwrap();
        let (_store, write_path) = runtime.block_on(async {
            let store: Arc<dyn Store> = Arc::new(
                EmbeddedStore::create(
                    dir.path(),
                    &EmbeddedOptions {
                        shards: 1,
                        ..Default::default()
                    },
                )
                .unwrap(),
            );
            store
                .put_product(&Product {
                    code: ProductCode::new("BENCH10").unwrap(),
                    name: "bench".into(),
                    doses_in_series: ROUNDS,
                    min_interval_days: 0,
                    allows_mixing: false,
                })
                .await
                .unwrap();
            store
                .put_site(&Site {
                    site_id: SiteId::new("bench-site").unwrap(),
                    name: "bench".into(),
                    area: Area {
                        province: AreaCode::new("01").unwrap(),
                        district: AreaCode::new("001").unwrap(),
                        commune: None,
                    },
                    daily_capacity: 1_000_000,
                })
                .await
                .unwrap();
            store
                .put_lot(&Lot {
                    lot_number: LotNumber::new("BL1").unwrap(),
                    site_id: SiteId::new("bench-site").unwrap(),
                    product: ProductCode::new("BENCH10").unwrap(),
                    expires: date!(2099 - 01 - 01),
                    quantity: u64::MAX / 2,
                })
                .await
                .unwrap();
            let people: Vec<Registration> = (0..PEOPLE)
                .map(|i| Registration {
                    person_code: PersonCode::new(format!("B{i:08}")).unwrap(),
                    name: format!("Bench {i}"),
                    birth_date: date!(1980 - 01 - 01),
                    phone: None,
                    area: Area {
                        province: AreaCode::new("01").unwrap(),
                        district: AreaCode::new("001").unwrap(),
                        commune: None,
                    },
                    priority_group: 5,
                    registered_at: datetime!(2026-11-01 00:00 UTC),
                })
                .collect();
            for chunk in people.chunks(50_000) {
                store.import_registrations(chunk).await.unwrap();
            }
            let campaign = Arc::new(Campaign::load(store.as_ref()).await.unwrap());
            let config = WriterConfig {
                queue_capacity: 64,
                max_commit_batch: 4000,
            };
            let metrics = Arc::new(Metrics::new());
            // The live aggregates are part of the write path: each commit moves them.
            let live = Arc::new(vaxcamp_ingest::live::Live::new(
                campaign.clone(),
                vaxcamp_ingest::live::LiveConfig::default(),
            ));
            // So is the analytics outbox: one more fsync'd append per group commit.
            // `VAXCAMP_BENCH_NO_OUTBOX=1` leaves it out, to measure what it costs.
            let feed = std::env::var_os("VAXCAMP_BENCH_NO_OUTBOX")
                .is_none()
                .then(|| {
                    let outbox = Arc::new(
                        analytics::Outbox::open(&dir.path().join("analytics-outbox"), 1 << 34)
                            .unwrap(),
                    );
                    Arc::new(vaxcamp_ingest::feed::AnalyticsFeed::new(
                        outbox,
                        campaign.clone(),
                    ))
                });
            let write_path = WritePath::start(
                store.clone(),
                campaign,
                metrics,
                live,
                feed,
                &config,
                tokio::runtime::Handle::current(),
            )
            .unwrap();
            (store, write_path)
        });
        let mut doses = Doses { next: 0 };
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let jobs: Vec<Vec<Dose>> = (0..iters).map(|_| doses.take(batch)).collect();
                runtime.block_on(async {
                    let started = Instant::now();
                    for job in jobs {
                        let outcomes = write_path.submit(0, job).unwrap().await.unwrap();
                        assert!(
                            outcomes
                                .iter()
                                .all(|o| matches!(o, DoseOutcome::Created { .. })),
                            "every bench dose is valid"
                        );
                    }
                    started.elapsed()
                })
            });
        });
        write_path.close();
    }
    group.finish();
}

criterion_group!(benches, raw_engine, shard_writer);
criterion_main!(benches);
