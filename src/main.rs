//! `vaxcamp`: the one command. It parses arguments and calls the crates; the logic lives there.

mod admin;
mod allocate;
mod demo;

/// mimalloc instead of the system allocator: the request path allocates many small strings, and
/// glibc's malloc showed up at ~15% of the shard writer's profile (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ingest::ServerConfig;

#[derive(Debug, Parser)]
#[command(
    name = "vaxcamp",
    version,
    about = "Mass-vaccination campaigns: register, check in, record doses, signed QR certificates."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole campaign on this machine: sites, lots, a million registrations, generated
    /// site traffic, live progress, a summary and sample certificates.
    Demo(demo::DemoArgs),
    /// Create a campaign in a data directory: store, signing keys, built-in products, admin token.
    Init(admin::InitArgs),
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Vaccination sites.
    #[command(subcommand)]
    Site(admin::SiteCommand),
    /// Vaccine lots allocated to sites.
    #[command(subcommand)]
    Lot(admin::LotCommand),
    /// The product catalogue.
    #[command(subcommand)]
    Product(admin::ProductCommand),
    /// Bearer tokens for registrars, observers and admins.
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// Bulk imports.
    #[command(subcommand)]
    Import(admin::ImportCommand),
    /// Signing keys and the trust list.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Verify a certificate or pass offline, from its text or a QR image.
    Verify(admin::VerifyArgs),
    /// Drive a server with a campaign workload and report latency truthfully.
    Loadtest(LoadtestCommand),
    /// Ask a running server how to split a vaccine shipment between sites, districts or provinces.
    Allocate(allocate::AllocateArgs),
    /// The live console for a running server: doses/s, areas, stock, alerts (needs a terminal).
    Console(console::ConsoleArgs),
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct LoadtestCommand {
    #[command(subcommand)]
    sub: Option<LoadtestSub>,
    #[command(flatten)]
    run: loadtest::LoadtestArgs,
}

#[derive(Debug, Subcommand)]
enum LoadtestSub {
    /// Check that every dose id in a ledger is stored exactly once.
    CheckLedger(loadtest::CheckLedgerArgs),
}

/// `vaxcamp serve`. Each flag also reads an environment variable; a flag or variable overrides
/// the configuration file, which overrides the defaults.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The configuration file, the data directory and the store (embedded or ScyllaDB).
    #[command(flatten)]
    store: admin::StoreArgs,
    /// Address to listen on. Default: 127.0.0.1:8080
    #[arg(long, env = "VAXCAMP_LISTEN")]
    listen: Option<SocketAddr>,
    /// Write jobs waiting per shard before the API answers 503.
    #[arg(long, env = "VAXCAMP_QUEUE_CAPACITY")]
    queue_capacity: Option<usize>,
    /// Most doses per group commit.
    #[arg(long, env = "VAXCAMP_MAX_COMMIT_BATCH")]
    max_commit_batch: Option<usize>,
    /// ClickHouse for analytics (its HTTP interface, e.g. http://127.0.0.1:8123). Without it,
    /// the embedded rollups in the data directory. The password comes from
    /// VAXCAMP_CLICKHOUSE_PASSWORD only.
    #[arg(long, env = "VAXCAMP_CLICKHOUSE")]
    clickhouse: Option<String>,
    /// ClickHouse database. Default: vaxcamp
    #[arg(long, env = "VAXCAMP_CLICKHOUSE_DATABASE")]
    clickhouse_database: Option<String>,
    /// ClickHouse user. Default: ClickHouse's default user.
    #[arg(long, env = "VAXCAMP_CLICKHOUSE_USER")]
    clickhouse_user: Option<String>,
    /// The campaign's time zone, a fixed offset from UTC such as +07:00: its midnight starts
    /// "today" on the console. Default: +07:00 (Viet Nam)
    #[arg(long, env = "VAXCAMP_UTC_OFFSET", allow_hyphen_values = true)]
    utc_offset: Option<String>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut config = self.store.server_config()?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(n) = self.queue_capacity {
            config.queue_capacity = n;
        }
        if let Some(n) = self.max_commit_batch {
            config.max_commit_batch = n;
        }
        if let Some(url) = &self.clickhouse {
            config.analytics.clickhouse = Some(url.clone());
        }
        if let Some(database) = &self.clickhouse_database {
            config.analytics.database.clone_from(database);
        }
        if let Some(user) = &self.clickhouse_user {
            config.analytics.user = Some(user.clone());
        }
        if let Some(offset) = &self.utc_offset {
            config.campaign.utc_offset.clone_from(offset);
        }
        config.analytics.password = std::env::var("VAXCAMP_CLICKHOUSE_PASSWORD").ok();
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VAXCAMP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: log files and CI get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Standard error, but held back while the console is on screen.
        .with_writer(console::log_writer)
        .with_ansi(colour)
        .init();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let store = admin::open_store(&config).await?;
    ingest::run(config, store, ingest::shutdown_signal()).await?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Init(args) => admin::init(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Site(command) => admin::site(command).await,
        Command::Lot(command) => admin::lot(command).await,
        Command::Product(command) => admin::product(command).await,
        Command::Token(command) => admin::token(command).await,
        Command::Import(command) => admin::import(command).await,
        Command::Keys(command) => admin::keys(command),
        Command::Verify(args) => admin::verify(args).await,
        Command::Console(args) => Ok(console::run(args).await?),
        Command::Allocate(args) => allocate::run(args).await,
        Command::Loadtest(LoadtestCommand {
            sub: Some(LoadtestSub::CheckLedger(args)),
            ..
        }) => {
            let check = loadtest::check_ledger(&args).await?;
            println!("{check}");
            anyhow::ensure!(check.is_ok(), "the ledger check failed");
            Ok(())
        }
        Command::Loadtest(LoadtestCommand { sub: None, run }) => {
            let report = loadtest::run(&run, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            println!("{report}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
