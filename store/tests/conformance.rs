//! The store conformance suite against the embedded engine.

use std::sync::Arc;

use vaxcamp_store::{EmbeddedOptions, EmbeddedStore, Store, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    let parent = tempfile::tempdir().expect("tempdir");
    let counter = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = parent.path().join(format!("store-{n}"));
        async move {
            let options = EmbeddedOptions {
                shards: 3,
                ..EmbeddedOptions::default()
            };
            Arc::new(EmbeddedStore::create(dir, &options).expect("create store")) as Arc<dyn Store>
        }
    })
    .await;
}
