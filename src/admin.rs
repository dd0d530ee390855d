//! The set-up commands: init, sites, lots, products, tokens, imports, keys, verify.
//!
//! These work on the campaign's store directly: the embedded store in a data directory (the
//! server must be stopped; the store refuses a second process with a clear message) or, with
//! `--scylla`, the ScyllaDB keyspace (safe while servers run, but a running server learns of new
//! sites, lots and products only through the admin API or a restart). Signing keys always live
//! in the data directory, on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use certify::{KeyPurpose, Limits, RevocationList, TrustList};
use clap::{Args, Subcommand};
use ingest::ServerConfig;
use ingest::areas::AreaNames;
use ingest::config::ScyllaSettings;
use ingest::keystore::Keystore;
use ingest::setup;
use store::scylla::{Consistency, ScyllaConfig, ScyllaStore};
use store::{
    Area, AreaCode, EmbeddedOptions, EmbeddedStore, Lot, LotNumber, Product, ProductCode, Role,
    Site, SiteId, Store,
};

fn default_data() -> PathBuf {
    PathBuf::from("./data")
}

#[derive(Debug, Args)]
pub struct DataDir {
    /// Data directory of the campaign.
    #[arg(long, env = "VAXCAMP_DATA", default_value_os_t = default_data())]
    pub data: PathBuf,
}

/// Where the campaign's records are: the embedded store in the data directory (the default) or
/// a ScyllaDB cluster. Shared by `serve`, `init` and the set-up commands. Each flag also reads an
/// environment variable; flags and variables override the configuration file's `[scylla]`
/// section, which overrides the defaults.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// A TOML configuration file (see `ingest::config` for every key).
    #[arg(long, env = "VAXCAMP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: signing keys, the analytics outbox and, without --scylla, the embedded
    /// store. Default: ./data
    #[arg(long, env = "VAXCAMP_DATA")]
    pub data: Option<PathBuf>,
    /// Keep the campaign in ScyllaDB: contact points, host:port,host:port,...
    #[arg(
        long = "scylla",
        env = "VAXCAMP_SCYLLA_NODES",
        value_name = "HOST:PORT,...",
        value_delimiter = ','
    )]
    pub scylla_nodes: Vec<String>,
    /// ScyllaDB keyspace of the campaign. Default: vaxcamp
    #[arg(long, env = "VAXCAMP_SCYLLA_KEYSPACE")]
    pub scylla_keyspace: Option<String>,
    /// The local datacenter (replicas placed there, requests prefer it). Default: none.
    #[arg(long, env = "VAXCAMP_SCYLLA_DC")]
    pub scylla_datacenter: Option<String>,
    /// Copies of each row, when the keyspace is created. Default: 3
    #[arg(long, env = "VAXCAMP_SCYLLA_RF")]
    pub scylla_replication_factor: Option<u32>,
    /// Consistency of writes, e.g. LOCAL_QUORUM (the default).
    #[arg(long, env = "VAXCAMP_SCYLLA_WRITE_CONSISTENCY")]
    pub scylla_write_consistency: Option<String>,
    /// Consistency of reads, e.g. LOCAL_QUORUM (the default). Must overlap the writes'.
    #[arg(long, env = "VAXCAMP_SCYLLA_READ_CONSISTENCY")]
    pub scylla_read_consistency: Option<String>,
    /// ScyllaDB user. The password comes from VAXCAMP_SCYLLA_PASSWORD only.
    #[arg(long, env = "VAXCAMP_SCYLLA_USER")]
    pub scylla_user: Option<String>,
    /// Encrypt connections to ScyllaDB with TLS and verify the nodes' certificates (a binary
    /// built with `--features scylla-tls`; otherwise refused at start-up).
    #[arg(long, env = "VAXCAMP_SCYLLA_TLS")]
    pub scylla_tls: bool,
    /// With --scylla-tls: PEM file of the CA that signed the nodes' certificates, trusted
    /// instead of the system trust store.
    #[arg(long, env = "VAXCAMP_SCYLLA_TLS_CA_FILE", value_name = "PEM_FILE")]
    pub scylla_tls_ca_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The configuration file (or the defaults) with these flags applied, validated. `serve`
    /// applies its own flags on top and validates again.
    pub fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        if let Some(data) = &self.data {
            config.data.clone_from(data);
        }
        let scylla = &mut config.scylla;
        let nodes: Vec<String> = self
            .scylla_nodes
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        if !nodes.is_empty() {
            scylla.nodes = nodes;
        }
        if let Some(keyspace) = &self.scylla_keyspace {
            scylla.keyspace.clone_from(keyspace);
        }
        if let Some(dc) = &self.scylla_datacenter {
            scylla.datacenter = Some(dc.clone());
        }
        if let Some(rf) = self.scylla_replication_factor {
            scylla.replication_factor = rf;
        }
        if let Some(level) = &self.scylla_write_consistency {
            scylla.write_consistency = level.trim().to_ascii_uppercase();
        }
        if let Some(level) = &self.scylla_read_consistency {
            scylla.read_consistency = level.trim().to_ascii_uppercase();
        }
        if let Some(user) = &self.scylla_user {
            scylla.username = Some(user.clone());
        }
        if self.scylla_tls {
            scylla.tls = true;
        }
        if let Some(ca) = &self.scylla_tls_ca_file {
            scylla.tls_ca_file = Some(ca.clone());
        }
        scylla.password = std::env::var("VAXCAMP_SCYLLA_PASSWORD").ok();
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// The store's connection settings from the validated `[scylla]` section.
pub fn scylla_config(settings: &ScyllaSettings) -> anyhow::Result<ScyllaConfig> {
    let level = |name: &str| -> anyhow::Result<Consistency> {
        Ok(match name {
            "ANY" => Consistency::Any,
            "ONE" => Consistency::One,
            "TWO" => Consistency::Two,
            "THREE" => Consistency::Three,
            "QUORUM" => Consistency::Quorum,
            "ALL" => Consistency::All,
            "LOCAL_QUORUM" => Consistency::LocalQuorum,
            "EACH_QUORUM" => Consistency::EachQuorum,
            "LOCAL_ONE" => Consistency::LocalOne,
            other => bail!("{other:?} is not a consistency level"),
        })
    };
    Ok(ScyllaConfig {
        nodes: settings.nodes.clone(),
        keyspace: settings.keyspace.clone(),
        datacenter: settings.datacenter.clone(),
        replication_factor: settings.replication_factor,
        write_consistency: level(&settings.write_consistency)?,
        read_consistency: level(&settings.read_consistency)?,
        username: settings.username.clone(),
        password: settings.password.clone(),
        tls: settings.tls,
        tls_ca_file: settings.tls_ca_file.clone(),
        shards: settings.shards,
        max_in_flight_per_shard: settings.max_in_flight_per_shard,
        request_timeout: Duration::from_millis(settings.request_timeout_ms),
        max_clock_skew: Duration::from_millis(settings.max_clock_skew_ms),
        lease_duration: Duration::from_millis(settings.lease_duration_ms),
        // Twice the lease: a restarted process outwaits its previous incarnation's lease.
        wait_for_lease: Some(Duration::from_millis(settings.lease_duration_ms) * 2),
        ..ScyllaConfig::default()
    })
}

/// Connects to the ScyllaDB keyspace of `config` (creating its tables if needed).
pub async fn connect_scylla(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    let scylla = &config.scylla;
    if scylla.username.is_some() && scylla.password.is_none() {
        bail!("a ScyllaDB user is set but VAXCAMP_SCYLLA_PASSWORD is not; export the password");
    }
    let store = ScyllaStore::connect(scylla_config(scylla)?)
        .await
        .with_context(|| {
            format!(
                "opening the campaign in ScyllaDB keyspace {} at {}",
                scylla.keyspace,
                scylla.nodes.join(",")
            )
        })?;
    Ok(Arc::new(store))
}

/// Opens the store of a campaign made by `vaxcamp init`: the embedded store in the data
/// directory, or the ScyllaDB keyspace when `[scylla]` names nodes.
pub async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    if !config.scylla.enabled() {
        let data = &config.data;
        let store = EmbeddedStore::open(data, &EmbeddedOptions::default())
            .with_context(|| format!("opening the campaign in {}", data.display()))?;
        return Ok(Arc::new(store));
    }
    let store = connect_scylla(config).await?;
    // Connecting creates missing tables, so an empty keyspace opens fine: refuse it here, as the
    // embedded store refuses a directory without a campaign.
    if store.setting("issuer").await?.is_none() {
        let keyspace = &config.scylla.keyspace;
        bail!(
            "the ScyllaDB keyspace {keyspace} has no campaign; run `vaxcamp init --scylla {} --scylla-keyspace {keyspace}` first",
            config.scylla.nodes.join(",")
        );
    }
    Ok(store)
}

/// The store of the campaign a set-up command works on.
async fn open(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    open_store(&args.server_config()?).await
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Shards of the store, fixed for the campaign's life. Embedded default: CPU cores, at least
    /// 2; ScyllaDB default: `[scylla] shards` (16), which every later command must agree with.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Issuer name written into certificates and the trust list.
    #[arg(long, default_value = "VN-MOH")]
    pub issuer: String,
    /// ISO 3166 country code of the doses given.
    #[arg(long, default_value = "VN")]
    pub country: String,
}

pub async fn init(args: InitArgs) -> anyhow::Result<()> {
    let mut config = args.store.server_config()?;
    let data = config.data.clone();
    let (store, place): (Arc<dyn Store>, String) = if config.scylla.enabled() {
        if let Some(shards) = args.shards {
            config.scylla.shards = shards;
            config.validate().map_err(anyhow::Error::msg)?;
        }
        std::fs::create_dir_all(&data)
            .with_context(|| format!("creating the data directory {}", data.display()))?;
        let place = format!(
            "ScyllaDB keyspace {} (keys in {})",
            config.scylla.keyspace,
            data.display()
        );
        (connect_scylla(&config).await?, place)
    } else {
        let mut options = EmbeddedOptions::default();
        if let Some(shards) = args.shards {
            options.shards = shards;
        }
        let store = EmbeddedStore::create(&data, &options)
            .with_context(|| format!("creating the campaign in {}", data.display()))?;
        (Arc::new(store), data.display().to_string())
    };
    let done = setup::init_campaign(store.as_ref(), &data, &args.issuer, &args.country).await?;
    store.close().await?;
    println!(
        "campaign ready in {place} ({} shards, {} new signing keys)",
        store.shard_count(),
        done.keys_made
    );
    if config.scylla.enabled() {
        println!(
            "every `vaxcamp serve` replica needs a copy of {} (see deploy/README.md)",
            Keystore::in_data_dir(&data).dir().display()
        );
    }
    match done.admin_token {
        Some(token) => {
            println!("admin token (shown once; only its hash is stored):");
            println!("{token}");
        }
        None => println!(
            "an admin token already exists; make another with `vaxcamp token add --role admin`"
        ),
    }
    Ok(())
}

fn area(province: &str, district: &str, commune: Option<&str>) -> anyhow::Result<Area> {
    Ok(Area {
        province: AreaCode::new(province)?,
        district: AreaCode::new(district)?,
        commune: commune.map(AreaCode::new).transpose()?,
    })
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Add a site (or update it) and print its bearer token once.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// Site id, e.g. hn-bachmai-01.
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        province: String,
        #[arg(long)]
        district: String,
        #[arg(long)]
        commune: Option<String>,
        /// Doses the site can give per day.
        #[arg(long, default_value_t = 1000)]
        capacity: u32,
    },
    /// List sites.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn site(command: SiteCommand) -> anyhow::Result<()> {
    match command {
        SiteCommand::Add {
            store: args,
            id,
            name,
            province,
            district,
            commune,
            capacity,
        } => {
            let store = open(&args).await?;
            let site = Site {
                site_id: SiteId::new(id)?,
                name,
                area: area(&province, &district, commune.as_deref())?,
                daily_capacity: capacity,
            };
            let (token, _) = setup::add_site(store.as_ref(), &site).await?;
            store.close().await?;
            println!("site {} added; its token (shown once):", site.site_id);
            println!("{token}");
        }
        SiteCommand::List { store: args } => {
            let store = open(&args).await?;
            for site in store.sites().await? {
                println!(
                    "{}\t{}\t{}/{}\t{}/day",
                    site.site_id,
                    site.name,
                    site.area.province,
                    site.area.district,
                    site.daily_capacity
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum LotCommand {
    /// Allocate doses of a lot to a site (or change the allocation).
    Add {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        site: String,
        /// Product code from the catalogue (`vaxcamp product list`).
        #[arg(long)]
        product: String,
        /// Lot number printed on the vial.
        #[arg(long)]
        lot: String,
        /// Expiry date, YYYY-MM-DD.
        #[arg(long)]
        expires: String,
        /// Doses allocated to the site.
        #[arg(long)]
        doses: u64,
    },
    /// List lots and stock.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_date(text: &str) -> anyhow::Result<time::Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .with_context(|| format!("{text:?} is not a date; use YYYY-MM-DD"))
}

pub async fn lot(command: LotCommand) -> anyhow::Result<()> {
    match command {
        LotCommand::Add {
            store: args,
            site,
            product,
            lot,
            expires,
            doses,
        } => {
            let store = open(&args).await?;
            let lot = Lot {
                lot_number: LotNumber::new(lot)?,
                site_id: SiteId::new(site)?,
                product: ProductCode::new(product)?,
                expires: parse_date(&expires)?,
                quantity: doses,
            };
            setup::add_lot(store.as_ref(), &lot).await?;
            store.close().await?;
            println!(
                "lot {} at {}: {} doses of {}, expires {}",
                lot.lot_number, lot.site_id, lot.quantity, lot.product, lot.expires
            );
        }
        LotCommand::List { store: args } => {
            let store = open(&args).await?;
            let used = store.totals().await?.lot_usage;
            for lot in store.lots().await? {
                let u = used.get(&lot.key()).copied().unwrap_or(0);
                println!(
                    "{}\t{}\t{}\texpires {}\t{} of {} left",
                    lot.site_id,
                    lot.lot_number,
                    lot.product,
                    lot.expires,
                    lot.quantity.saturating_sub(u),
                    lot.quantity
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum ProductCommand {
    /// Add a product to the catalogue (or change one).
    Add {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
        /// Doses in the primary series.
        #[arg(long)]
        doses: u8,
        /// Minimum days between doses.
        #[arg(long, default_value_t = 0)]
        interval_days: u16,
        /// The series may mix with other mixable products.
        #[arg(long)]
        allows_mixing: bool,
    },
    /// List the catalogue.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn product(command: ProductCommand) -> anyhow::Result<()> {
    match command {
        ProductCommand::Add {
            store: args,
            code,
            name,
            doses,
            interval_days,
            allows_mixing,
        } => {
            let store = open(&args).await?;
            let product = Product {
                code: ProductCode::new(code)?,
                name,
                doses_in_series: doses,
                min_interval_days: interval_days,
                allows_mixing,
            };
            setup::add_product(store.as_ref(), &product).await?;
            store.close().await?;
            println!("product {} saved", product.code);
        }
        ProductCommand::List { store: args } => {
            let store = open(&args).await?;
            for p in store.products().await? {
                let mixing = if p.allows_mixing { ", mixable" } else { "" };
                println!(
                    "{}\t{}\t{} dose(s), {} days apart{mixing}",
                    p.code, p.name, p.doses_in_series, p.min_interval_days
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token and print it once (site tokens come from `vaxcamp site add`).
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// registrar, observer or admin.
        #[arg(long)]
        role: String,
        /// Who holds it, for the audit trail.
        #[arg(long)]
        label: String,
    },
}

pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Add {
        store: args,
        role,
        label,
    } = command;
    let role: Role = role.parse()?;
    if role == Role::Site {
        bail!("site tokens are issued with `vaxcamp site add`");
    }
    let store = open(&args).await?;
    let token = setup::add_token(store.as_ref(), role, None, &label).await?;
    store.close().await?;
    println!("{} token for {label} (shown once):", role.as_str());
    println!("{token}");
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import pre-registrations from CSV:
    /// person_code,name,birth_date,phone,province,district,commune,priority_group
    Registrations {
        #[command(flatten)]
        store: StoreArgs,
        file: PathBuf,
    },
    /// Import the names of provinces and districts, shown on the console, from CSV:
    /// province,district,name (district empty for a province). Replaces the whole list. On a
    /// running server, use `PUT /v1/areas`.
    Areas {
        #[command(flatten)]
        store: StoreArgs,
        file: PathBuf,
    },
}

pub async fn import(command: ImportCommand) -> anyhow::Result<()> {
    let (args, file) = match command {
        ImportCommand::Areas { store, file } => return import_areas(&store, &file).await,
        ImportCommand::Registrations { store, file } => (store, file),
    };
    let store = open(&args).await?;
    let size = std::fs::metadata(&file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let reader =
        std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let report = import_with_progress(store.as_ref(), reader, size / 64).await?;
    store.close().await?;
    println!(
        "{} rows: {} imported, {} already registered, {} refused",
        report.rows, report.created, report.already_present, report.error_count
    );
    for e in &report.errors {
        println!("  line {}: {}", e.line, e.message);
    }
    Ok(())
}

async fn import_areas(args: &StoreArgs, file: &Path) -> anyhow::Result<()> {
    let reader =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let names = match AreaNames::from_csv(std::io::BufReader::new(reader)) {
        Ok(names) => names,
        Err(errors) => {
            for e in &errors {
                eprintln!("  line {}: {}", e.line, e.message);
            }
            anyhow::bail!(
                "{}: {} bad rows; nothing was imported (columns: province,district,name)",
                file.display(),
                errors.len()
            );
        }
    };
    let store = open(args).await?;
    setup::put_area_names(store.as_ref(), &names).await?;
    store.close().await?;
    println!(
        "{} area names imported (the list they replace is gone); a server started before shows them after a restart (on a running server, use PUT /v1/areas instead)",
        names.len()
    );
    Ok(())
}

/// Imports with a progress bar (rows, with a rough total from the file size), or plain lines
/// when stderr is not a terminal.
pub async fn import_with_progress(
    store: &dyn Store,
    reader: impl std::io::Read,
    estimated_rows: u64,
) -> anyhow::Result<ingest::import::ImportReport> {
    let bar = indicatif::ProgressBar::new(estimated_rows.max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} importing [{bar:40}] {human_pos} rows ({per_sec}, {elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let hidden = bar.is_hidden();
    let mut last_line = std::time::Instant::now();
    let report = ingest::import::import_registrations(store, reader, |rows| {
        if rows > bar.length().unwrap_or(0) {
            bar.set_length(rows);
        }
        bar.set_position(rows);
        if hidden && last_line.elapsed() > Duration::from_secs(2) {
            eprintln!("imported {rows} rows");
            last_line = std::time::Instant::now();
        }
    })
    .await?;
    bar.finish_and_clear();
    Ok(report)
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make signing keys for any purpose that has none (idempotent).
    Generate {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long, default_value = "VN-MOH")]
        issuer: String,
    },
    /// Replace the active key of a purpose; the old one keeps verifying but never signs again.
    Rotate {
        #[command(flatten)]
        dir: DataDir,
        /// certificate or registration.
        #[arg(long, default_value = "certificate")]
        purpose: String,
        #[arg(long, default_value = "VN-MOH")]
        issuer: String,
    },
    /// List the keys in the trust list.
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Print the public trust list (JSON), for verifiers.
    Export {
        #[command(flatten)]
        dir: DataDir,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn purpose(text: &str) -> anyhow::Result<KeyPurpose> {
    match text {
        "certificate" => Ok(KeyPurpose::Certificate),
        "registration" => Ok(KeyPurpose::Registration),
        other => bail!("purpose {other:?}: use certificate or registration"),
    }
}

fn read_trust(dir: &Path) -> anyhow::Result<TrustList> {
    let keys = Keystore::in_data_dir(dir);
    anyhow::ensure!(
        keys.dir().join("trust.json").is_file(),
        "no keys in {}; run `vaxcamp init --data {}` (or `vaxcamp keys generate`) first",
        keys.dir().display(),
        dir.display()
    );
    Ok(keys.trust_list("")?)
}

pub fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match command {
        KeysCommand::Generate { dir, issuer } => {
            let made = Keystore::in_data_dir(&dir.data).generate(&issuer, now)?;
            if made.is_empty() {
                println!("every purpose already has an active key");
            }
            for (purpose, kid) in made {
                println!("made {} key {kid}", purpose.as_str());
            }
        }
        KeysCommand::Rotate {
            dir,
            purpose: p,
            issuer,
        } => {
            let (kid, retired) =
                Keystore::in_data_dir(&dir.data).rotate(purpose(&p)?, &issuer, now)?;
            println!(
                "new {p} key {kid}; retired: {}",
                retired
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "restart the server to sign with the new key; certificates under retired keys stay valid"
            );
        }
        KeysCommand::List { dir } => {
            let trust = read_trust(&dir.data)?;
            println!("issuer {}", trust.issuer);
            for key in &trust.keys {
                let until = key
                    .valid_until
                    .map_or_else(|| "-".to_owned(), |u| u.to_string());
                println!(
                    "{}\t{}\t{}\tfrom {}\tuntil {until}",
                    key.kid,
                    key.purpose.as_str(),
                    key.status.as_str(),
                    key.valid_from
                );
            }
        }
        KeysCommand::Export { dir, out } => {
            let json = read_trust(&dir.data)?.to_json();
            match out {
                Some(path) => std::fs::write(&path, json)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{json}"),
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The QR text (VC1:... or RG1:...). Omit to read --image or standard input.
    pub text: Option<String>,
    /// A PNG image of the QR code.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// The issuer's trust list: a JSON file (from `vaxcamp keys export`) or a URL
    /// (`http://host:port/v1/trust`). With a file, verification needs no network at all.
    #[arg(long)]
    pub trust: String,
    /// A revocation list: a JSON file or a URL (`.../v1/revocations`).
    #[arg(long)]
    pub revocations: Option<String>,
}

/// Reads a JSON document from a file, or fetches it when `source` is an http(s) URL.
async fn read_source(source: &str) -> anyhow::Result<String> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let response = reqwest::get(source)
            .await
            .with_context(|| format!("fetching {source}"))?;
        let response = response
            .error_for_status()
            .with_context(|| format!("fetching {source}"))?;
        Ok(response.text().await?)
    } else {
        std::fs::read_to_string(source).with_context(|| format!("reading {source}"))
    }
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let text = match (&args.text, &args.image) {
        (Some(text), None) => text.clone(),
        (None, Some(image)) => {
            let bytes =
                std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
            certify::qr::decode_png(&bytes).context("no readable QR code in the image")?
        }
        (None, None) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().take(64 * 1024), &mut text)?;
            text
        }
        (Some(_), Some(_)) => bail!("give the text or --image, not both"),
    };
    let trust = TrustList::from_json(&read_source(&args.trust).await?)?;
    let revoked: Option<RevocationList> = match &args.revocations {
        Some(source) => Some(serde_json::from_str(&read_source(source).await?)?),
        None => None,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let text = text.trim();
    let limits = Limits::default();
    if text.starts_with(certify::REGISTRATION_PREFIX) {
        let pass = certify::verify_registration(text, &trust, now, &limits)
            .map_err(|e| anyhow::anyhow!("INVALID ({}): {e}", e.code()))?;
        println!("VALID pre-registration pass (key {})", pass.kid);
        println!("{}", serde_json::to_string_pretty(&pass.content)?);
    } else {
        let cert = certify::verify_certificate(text, &trust, revoked.as_ref(), now, &limits)
            .map_err(|e| anyhow::anyhow!("INVALID ({}): {e}", e.code()))?;
        println!(
            "VALID {} certificate ({}), key {}",
            cert.content.status.as_str(),
            cert.content.status.colour(),
            cert.kid
        );
        println!("{}", serde_json::to_string_pretty(&cert.content)?);
    }
    Ok(())
}

use std::io::Read as _;
