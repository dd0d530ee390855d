//! Test support: a real server on 127.0.0.1:0 over a real store, with a small campaign (two
//! sites, lots, people) and a JSON client.
//!
//! The store is the embedded engine in a temp directory ([`TestServer::start`]) or the ScyllaDB
//! backend ([`TestServer::start_scylla`]): against the in-process CQL test node (`cqlnode`), or
//! against a real cluster when `VAXCAMP_SCYLLA_NODES=host:port,...` is set (`VAXCAMP_SCYLLA_RF`,
//! default 3; `VAXCAMP_SCYLLA_DC`; `VAXCAMP_SCYLLA_USER` / `VAXCAMP_SCYLLA_PASSWORD`;
//! `VAXCAMP_SCYLLA_TLS` / `VAXCAMP_SCYLLA_TLS_CA_FILE`). Each ScyllaDB server gets its own keyspace,
//! `vaxcamp_f<pid>_<time>_<n>`, left behind for inspection. The signing keys are in the temp
//! directory either way.

#![allow(dead_code, clippy::unwrap_used)]

pub mod faulty;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use ingest::ServerConfig;
use ingest::setup;
use reqwest::StatusCode;
use serde_json::{Value, json};
use store::{
    Area, AreaCode, EmbeddedOptions, EmbeddedStore, Lot, LotNumber, ProductCode, Role,
    ScyllaConfig, ScyllaStore, Site, SiteId, Store,
};
use time::macros::date;
use tokio::sync::oneshot;

pub struct TestServer {
    pub base: String,
    pub admin: String,
    /// Site `hn-01` (Ha Noi), lots `FK100` (Comirnaty) and `EXPIRED1`.
    pub site: String,
    /// Site `hcm-01` (Ho Chi Minh City), lot `MD200` (Spikevax).
    pub site2: String,
    pub observer: String,
    pub registrar: String,
    pub store: Arc<dyn Store>,
    /// The ScyllaDB settings of the store (its keyspace), when it is the ScyllaDB backend.
    pub scylla: Option<ScyllaConfig>,
    /// The CQL test node the store talks to, unless a real cluster was given.
    pub node: Option<Arc<cqlnode::CqlNode>>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub fn area(province: &str, district: &str) -> Area {
    Area {
        province: AreaCode::new(province).unwrap(),
        district: AreaCode::new(district).unwrap(),
        commune: None,
    }
}

/// A store and campaign set-up ready to serve, before the server starts.
pub struct Campaign {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub admin: String,
    pub site: String,
    pub site2: String,
    pub observer: String,
    pub registrar: String,
    pub scylla: Option<ScyllaConfig>,
    pub node: Option<Arc<cqlnode::CqlNode>>,
}

/// The campaign on the embedded store.
pub async fn campaign() -> Campaign {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::create(
            dir.path(),
            &EmbeddedOptions {
                shards: 2,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    set_up(dir, store, None, None).await
}

static KEYSPACES: AtomicU32 = AtomicU32::new(0);

fn unique_keyspace_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "vaxcamp_f{}_{}_{}",
        std::process::id(),
        secs,
        KEYSPACES.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where a ScyllaDB campaign lives: a fresh keyspace on a real cluster from the environment, or
/// on a new CQL test node.
pub async fn scylla_target() -> (ScyllaConfig, Option<Arc<cqlnode::CqlNode>>) {
    let base = ScyllaConfig {
        keyspace: unique_keyspace_name(),
        // Two shards as the embedded campaign, few buckets: quick to create and to list.
        shards: 2,
        people_buckets: 16,
        max_in_flight_per_shard: 32,
        request_timeout: std::time::Duration::from_secs(2),
        ..ScyllaConfig::default()
    };
    // The same variables `vaxcamp` reads, so a secured cluster works too (TLS needs the tests
    // built with `--features vaxcamp/scylla-tls`, as CI builds them).
    if let Some(config) = store::conformance::scylla_cluster_from_env(base.clone()) {
        return (config, None);
    }
    let node = cqlnode::CqlNode::start(cqlnode::NodeConfig::default())
        .await
        .expect("start the CQL test node");
    let config = ScyllaConfig {
        nodes: vec![node.addr().to_string()],
        replication_factor: 1,
        ..base
    };
    (config, Some(Arc::new(node)))
}

/// The campaign on the ScyllaDB backend (see the module docs for where).
pub async fn scylla_campaign() -> Campaign {
    scylla_campaign_with(|_| {}).await
}

/// The same, with the store's settings changed first (e.g. a short writer lease).
pub async fn scylla_campaign_with(tweak: impl FnOnce(&mut ScyllaConfig)) -> Campaign {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, node) = scylla_target().await;
    tweak(&mut config);
    let store: Arc<dyn Store> = Arc::new(
        ScyllaStore::connect(config.clone())
            .await
            .expect("connect to ScyllaDB"),
    );
    set_up(dir, store, Some(config), node).await
}

/// The sites, lots and tokens every test campaign has, in `store`; keys in `dir`.
async fn set_up(
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    scylla: Option<ScyllaConfig>,
    node: Option<Arc<cqlnode::CqlNode>>,
) -> Campaign {
    let init = setup::init_campaign(store.as_ref(), dir.path(), "VN-MOH", "VN")
        .await
        .unwrap();
    let admin = init.admin_token.unwrap();
    let hn = Site {
        site_id: SiteId::new("hn-01").unwrap(),
        name: "Bach Mai".into(),
        area: area("01", "001"),
        daily_capacity: 2000,
    };
    let hcm = Site {
        site_id: SiteId::new("hcm-01").unwrap(),
        name: "Cho Ray".into(),
        area: area("79", "760"),
        daily_capacity: 3000,
    };
    let (site, _) = setup::add_site(store.as_ref(), &hn).await.unwrap();
    let (site2, _) = setup::add_site(store.as_ref(), &hcm).await.unwrap();
    let lot = |number: &str, site: &str, product: &str, expires, quantity| Lot {
        lot_number: LotNumber::new(number).unwrap(),
        site_id: SiteId::new(site).unwrap(),
        product: ProductCode::new(product).unwrap(),
        expires,
        quantity,
    };
    for l in [
        lot(
            "FK100",
            "hn-01",
            "COMIRNATY",
            date!(2099 - 12 - 31),
            100_000,
        ),
        lot("EXPIRED1", "hn-01", "COMIRNATY", date!(2020 - 01 - 01), 100),
        lot(
            "MD200",
            "hcm-01",
            "SPIKEVAX",
            date!(2099 - 12 - 31),
            100_000,
        ),
        lot("TINY1", "hn-01", "COMIRNATY", date!(2099 - 12 - 31), 1),
    ] {
        setup::add_lot(store.as_ref(), &l).await.unwrap();
    }
    let observer = setup::add_token(store.as_ref(), Role::Observer, None, "steering committee")
        .await
        .unwrap();
    let registrar = setup::add_token(store.as_ref(), Role::Registrar, None, "portal")
        .await
        .unwrap();
    Campaign {
        dir,
        store,
        admin,
        site,
        site2,
        observer,
        registrar,
        scylla,
        node,
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let c = campaign().await;
        Self::start_on(c, tweak).await
    }

    /// The same campaign on the ScyllaDB backend.
    pub async fn start_scylla() -> Self {
        Self::start_on(scylla_campaign().await, |_| {}).await
    }

    /// Serves `campaign`, optionally with its store wrapped (e.g. gated).
    pub async fn start_on(c: Campaign, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = ServerConfig {
            data: c.dir.path().to_owned(),
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let state = ingest::build_state(c.store.clone(), c.dir.path(), &config)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            ingest::serve(listener, state, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            base,
            admin: c.admin,
            site: c.site,
            site2: c.site2,
            observer: c.observer,
            registrar: c.registrar,
            store: c.store,
            scylla: c.scylla,
            node: c.node,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            _dir: c.dir,
        }
    }

    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Stops this server and starts a new one on the same ScyllaDB keyspace with a newly
    /// connected store, as a restarted process would: the new session recovers every shard from
    /// the keyspace (it finishes any write the old one left half-done).
    pub async fn restart(mut self) -> Self {
        self.shut_down().await;
        let config = self
            .scylla
            .clone()
            .expect("restart is for the ScyllaDB backend");
        let store: Arc<dyn Store> =
            Arc::new(ScyllaStore::connect(config).await.expect("reconnect"));
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        let c = Campaign {
            dir,
            store,
            admin: self.admin.clone(),
            site: self.site.clone(),
            site2: self.site2.clone(),
            observer: self.observer.clone(),
            registrar: self.registrar.clone(),
            scylla: self.scylla.clone(),
            node: self.node.clone(),
        };
        Self::start_on(c, |_| {}).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON with a token; returns status and JSON body (Null when the body is not JSON).
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).json(body), token)
            .await
    }

    /// PUTs JSON with a token; returns status and JSON body (Null when the body is not JSON).
    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.put(self.url(path)).json(body), token)
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path)), token).await
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Registers a person with the registrar token; returns (person code, RG1 pass).
    pub async fn register(&self, code: &str, name: &str) -> (String, String) {
        let (status, body) = self
            .post(
                "/v1/registrations",
                Some(&self.registrar),
                &json!({"person_code": code, "name": name, "birth_date": "1985-03-02", "phone": "0912345678",
                        "area": {"province": "01", "district": "001", "commune": "00001"}, "priority_group": 3}),
            )
            .await;
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "register {code}: {status} {body}"
        );
        (
            body["person_code"].as_str().unwrap().to_owned(),
            body["registration_qr"].as_str().unwrap().to_owned(),
        )
    }
}

/// A dose body at `hn-01` from lot FK100.
pub fn dose(
    dose_id: &str,
    person: &str,
    dose_number: u8,
    administered_at: time::OffsetDateTime,
) -> Value {
    json!({
        "dose_id": dose_id,
        "person_code": person,
        "lot": "FK100",
        "dose_number": dose_number,
        "vaccinator": "nurse-12",
        "administered_at": administered_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
    })
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Now, to the second.
pub fn now() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap()
}

/// Asserts the common error shape and code.
pub fn assert_error(status: StatusCode, body: &Value, expected_status: StatusCode, code: &str) {
    assert_eq!(status, expected_status, "body: {body}");
    assert_eq!(body["error"], code, "body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message: {body}"
    );
}

/// The server's published trust list.
pub async fn trust(server: &TestServer) -> certify::TrustList {
    let (status, body) = server.get("/v1/trust", None).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_value(body).unwrap()
}

/// Verifies certificate text offline against `trust`, now; panics when it does not verify.
pub fn verify(text: &str, trust: &certify::TrustList) -> certify::VaccinationCertificate {
    certify::verify_certificate(
        text,
        trust,
        None,
        time::OffsetDateTime::now_utc().unix_timestamp(),
        &certify::Limits::default(),
    )
    .unwrap()
    .content
}
