//! End-to-end: the real `vaxcamp console` in a real terminal (tmux) against a real server with
//! live traffic. Reads the screen with `tmux capture-pane`, sees the dose count move, drills
//! down with `tmux send-keys`, types a shipment and reads the allocation proposal, sees the
//! server go away, and quits with the terminal restored.
//!
//! Also: the server's live feed and its allocation planner, read by the console's own code over
//! real HTTP.
//!
//! More: the console at 80×24 sees its server stop ("Offline") and a new one start on the same
//! port and data ("● live" again); the terminal is out of raw mode after `q` and after a panic
//! (`stty -a` in the pane).
//!
//! tmux comes from Debian's package; `tests/run.sh` installs it. If it is missing here, the
//! test installs it with apt-get, and skips (saying so) only if that fails, unless
//! `VAXCAMP_REQUIRE_TMUX=1` (as in CI), when a missing tmux fails the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, dose, new_id, now};
use reqwest::StatusCode;
use serde_json::json;

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
    _config: tempfile::NamedTempFile,
}

fn tmux_works() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when tmux can run, installing it with apt-get first if it is missing. With
/// `VAXCAMP_REQUIRE_TMUX=1` a tmux that cannot be had fails the test instead of skipping it.
fn tmux_ready(test: &str) -> bool {
    if tmux_works() {
        return true;
    }
    eprintln!("tmux is missing; trying `apt-get install -y tmux`");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "tmux"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        install();
    }
    if tmux_works() {
        return true;
    }
    assert!(
        std::env::var("VAXCAMP_REQUIRE_TMUX").as_deref() != Ok("1"),
        "{test}: tmux is not installed and `apt-get install -y tmux` failed, and \
         VAXCAMP_REQUIRE_TMUX=1 says this test must run"
    );
    eprintln!(
        "SKIPPED {test}: tmux is not installed and `apt-get install -y tmux` failed; \
         tests/run.sh installs it (and sets VAXCAMP_REQUIRE_TMUX=1)"
    );
    false
}

/// Whether `stty -a` output on `screen` shows a terminal in cooked mode (line editing, echo,
/// signals): what a shell needs after the console has left.
fn cooked(screen: &str) -> bool {
    let words: Vec<&str> = screen.split_whitespace().collect();
    ["icanon", "echo", "isig"]
        .iter()
        .all(|flag| words.contains(flag) && !words.contains(&format!("-{flag}").as_str()))
}

impl Tmux {
    /// Runs the shell command `command` in a detached `width`×`height` session with no status
    /// line, on a tmux server of its own (`name` tells the tests of this binary apart).
    fn start(name: &str, command: &str, width: u16, height: u16) -> Self {
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(config.path(), "set -g status off\n").unwrap();
        let socket = format!("vaxcamp-console-{name}-{}", std::process::id());
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f"])
            .arg(config.path())
            .args([
                "new-session",
                "-d",
                "-s",
                "console",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .args(["sh", "-c", command])
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session failed");
        Self {
            socket,
            _config: config,
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "console"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "console"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Waits until `check` accepts the screen, failing with the last screen after `within`.
    fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        let mut delay = Duration::from_millis(20);
        loop {
            let screen = self.screen();
            if let Some(found) = check(&screen) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {what}; the screen was:\n{screen}"
            );
            // Polling backoff, not a guess at how long anything takes.
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The number after "today" on the overview (`today 1,234` or `today (since 07:59) 1,234`).
fn doses_today(screen: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.contains("all time"))?;
    let after = &line[line.find("today")? + "today".len()..];
    let after = match after.trim_start().strip_prefix("(since") {
        Some(rest) => &rest[rest.find(')')? + 1..],
        None => after,
    };
    after
        .split_whitespace()
        .next()?
        .replace(',', "")
        .parse()
        .ok()
}

/// Registers people and records their first dose at both sites, one every 20 ms, until told
/// to stop (or 3,000 doses, or a minute, whichever comes first).
fn drive_traffic(server: &TestServer, stop: Arc<AtomicBool>, recorded: Arc<AtomicU64>) {
    let client = server.client.clone();
    let base = server.base.clone();
    let registrar = server.registrar.clone();
    let sites = [
        (server.site.clone(), "FK100"),
        (server.site2.clone(), "MD200"),
    ];
    tokio::spawn(async move {
        let started = Instant::now();
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        for i in 0..3_000u32 {
            if stop.load(Ordering::Acquire) || started.elapsed() > Duration::from_secs(60) {
                break;
            }
            pace.tick().await;
            let code = format!("E2E{i:05}");
            let registered = client
                .post(format!("{base}/v1/registrations"))
                .bearer_auth(&registrar)
                .json(&json!({"person_code": code, "name": "Trần Thị Bình", "birth_date": "1990-01-01",
                    "area": {"province": "01", "district": "001"}, "priority_group": 5}))
                .send()
                .await;
            if registered.is_err() {
                break; // the server stopped
            }
            let (token, lot) = &sites[i as usize % 2];
            let mut body = dose(&new_id(), &code, 1, now());
            body["lot"] = json!(lot);
            match client
                .post(format!("{base}/v1/doses"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status() == StatusCode::CREATED => {
                    recorded.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_tmux_follows_live_traffic_and_drills_down() {
    if !tmux_ready("console_in_tmux_follows_live_traffic_and_drills_down") {
        return;
    }
    let server = TestServer::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let recorded = Arc::new(AtomicU64::new(0));
    drive_traffic(&server, stop.clone(), recorded.clone());

    // The shell reports the console's exit status on the screen once the console has given the
    // terminal back. (tmux's own `pane_dead` proved unreliable here: it sometimes missed the
    // exit and left a zombie.) Every value quoted here is letters, digits and `/:._-`.
    let command = format!(
        "NO_COLOR=1 VAXCAMP_LOG=warn VAXCAMP_TOKEN='{}' '{}' console --server '{}'; \
         echo \"console exited with status $?\"; stty -a; exec sleep 3600",
        server.observer,
        env!("CARGO_BIN_EXE_vaxcamp"),
        server.base
    );
    let tmux = tokio::task::block_in_place(|| Tmux::start("drill", &command, 100, 30));
    let wait = Duration::from_secs(30);

    tokio::task::block_in_place(|| {
        // The overview comes up live, and the count of doses today moves.
        let first = tmux.wait_for("the live overview", wait, |s| {
            s.contains("● live").then(|| doses_today(s)).flatten()
        });
        let later = tmux.wait_for("the dose count to move", wait, |s| {
            doses_today(s).filter(|n| *n > first)
        });
        assert!(later > first);
        assert!(recorded.load(Ordering::Relaxed) > 0);

        // Areas: nation → province 01 → district 001 → the site, by key presses.
        tmux.keys(&["Tab"]);
        tmux.wait_for("provinces", wait, |s| {
            (s.contains("> Province 01") && s.contains("Province 79")).then_some(())
        });
        tmux.keys(&["Enter"]);
        tmux.wait_for("districts of province 01", wait, |s| {
            (s.contains("Nation › 01") && s.contains("> District 001")).then_some(())
        });
        tmux.keys(&["Enter"]);
        tmux.wait_for("sites of district 001", wait, |s| {
            s.contains("> Bach Mai").then_some(())
        });
        tmux.keys(&["Enter"]);
        let site = tmux.wait_for("the site's detail", wait, |s| {
            s.contains("Bach Mai (hn-01) province 01 · district 001")
                .then(|| s.to_owned())
        });
        assert!(site.contains("Nation › 01 › 001 › hn-01"), "{site}");
        assert!(site.contains("COMIRNATY"), "{site}");
        // Esc goes back up.
        tmux.keys(&["Escape"]);
        tmux.wait_for("back at the district", wait, |s| {
            (s.contains("Nation › 01 › 001 ") && s.contains("> Bach Mai")).then_some(())
        });
        // One Escape at a time: two in a row read as Alt-Escape.
        tmux.keys(&["Escape"]);
        tmux.wait_for("back at the province", wait, |s| {
            s.contains("> District 001").then_some(())
        });
        tmux.keys(&["Escape"]);
        tmux.wait_for("back at the nation", wait, |s| {
            s.contains("> Province 01").then_some(())
        });
        // The filter narrows the table.
        tmux.keys(&["/", "7", "9", "Enter"]);
        tmux.wait_for("the filtered table", wait, |s| {
            (s.contains("filter \"79\"") && !s.contains("Province 01")).then_some(())
        });

        // Stock: pick COMIRNATY's row with the filter, type a shipment of it, and read the
        // proposal the server's planner makes.
        tmux.keys(&["3"]);
        tmux.wait_for("the stock view", wait, |s| {
            s.contains("Press a to propose").then_some(())
        });
        tmux.keys(&["/", "COMIRNATY", "Enter"]);
        tmux.wait_for("the COMIRNATY rows", wait, |s| {
            (s.contains("filter \"COMIRNATY\"") && !s.contains("Cho Ray")).then_some(())
        });
        tmux.keys(&["a"]);
        tmux.wait_for("the shipment form", wait, |s| {
            s.contains("Product COMIRNATY").then_some(())
        });
        tmux.keys(&["1000", "Enter"]);
        let proposal = tmux.wait_for("the proposal", wait, |s| {
            (s.contains("Shipment allocation · COMIRNATY, 1,000 doses, by site")
                && s.contains("of 1,000  held back"))
            .then(|| s.to_owned())
        });
        assert!(proposal.contains("Bach Mai"), "{proposal}");
        assert!(proposal.contains("Days now → after"), "{proposal}");
        // Esc closes the proposal: the by-site table is back.
        tmux.keys(&["Escape"]);
        tmux.wait_for("the by-site table", wait, |s| {
            (s.contains("By site") && s.contains("Press a to propose")).then_some(())
        });
    });

    // The server goes away: the console says so and keeps trying.
    stop.store(true, Ordering::Release);
    server.stop().await;
    tokio::task::block_in_place(|| {
        tmux.wait_for("the offline banner", wait, |s| {
            (s.contains("Offline:") && s.contains("offline, retry in")).then_some(())
        });
        // q quits with status 0, and the terminal is back on its normal screen.
        tmux.keys(&["q"]);
        let screen = tmux.wait_for("the console to exit", wait, |s| {
            s.contains("console exited with status")
                .then(|| s.to_owned())
        });
        assert!(
            screen.contains("console exited with status 0"),
            "the console exits cleanly: {screen}"
        );
        assert!(
            !screen.contains("Overview"),
            "the alternate screen is gone: {screen}"
        );
        let screen = tmux.wait_for("stty's report", wait, |s| {
            s.contains("icanon").then(|| s.to_owned())
        });
        assert!(cooked(&screen), "raw mode is off after q: {screen}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_reads_the_live_feed_of_a_real_server() {
    let server = TestServer::start().await;
    let (person, _) = server.register("001090099999", "Lê Văn Cường").await;
    let (status, body) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&new_id(), &person, 1, now()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The snapshot, as the console's types read it.
    let response = server
        .client
        .get(server.url("/v1/live"))
        .bearer_auth(&server.observer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let snapshot: console::Snapshot = response.json().await.unwrap();
    assert_eq!(snapshot.doses.today, 1);
    assert_eq!(snapshot.doses.since_start, 1);
    assert_eq!(snapshot.certificates.partial, 1);
    assert_eq!(snapshot.registrations.since_start, 1);
    assert_eq!(snapshot.queues.depths.len(), 2);
    let hn = snapshot
        .sites
        .iter()
        .find(|s| s.site_id == "hn-01")
        .unwrap();
    assert_eq!((hn.province.as_str(), hn.district.as_str()), ("01", "001"));
    assert_eq!(hn.doses_today, 1);
    assert!(hn.last_dose_at.is_some());
    assert!(hn.stock.iter().any(|p| p.product == "COMIRNATY"));
    // TINY1 at hn-01 has one dose and none used; FK100 100,000; EXPIRED1 100.
    assert_eq!(hn.remaining, 100_000 - 1 + 100 + 1);

    // The analytics figures, and the allocation planner through the console's own client.
    let analytics = snapshot.analytics.as_ref().unwrap();
    assert_eq!(analytics.backend, "embedded");
    assert_eq!(analytics.dropped_rows, 0);
    let planner =
        console::allocation::AllocationClient::new(server.base.clone(), server.observer.clone())
            .unwrap();
    let shipment = |product: &str| console::allocation::AllocationQuery {
        product: product.into(),
        quantity: 1_000,
        level: console::allocation::Level::District,
    };
    let answer = planner.propose(&shipment("COMIRNATY")).await.unwrap();
    assert_eq!(answer.plan.request.shipment_doses, 1_000);
    assert_eq!(
        answer.plan.request.level,
        console::allocation::Level::District
    );
    assert!(
        answer.plan.lines.iter().any(|l| l.area == "01/001"),
        "{answer:?}"
    );
    assert!(answer.plan.allocated_doses <= 1_000);
    let refused = planner.propose(&shipment("NOPE")).await.unwrap_err();
    assert!(refused.contains("no product NOPE"), "{refused}");

    // Sites may not read it; the stream wants an event-stream client.
    let (status, _) = server.get("/v1/live", Some(&server.site)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = server.get("/v1/live/stream", Some(&server.observer)).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{body}");

    // The console's feed follows the stream and delivers a snapshot.
    let (sender, mut events) = tokio::sync::mpsc::channel(16);
    let feed = tokio::spawn(console::feed::follow(
        console::FeedConfig::new(server.base.clone(), server.observer.clone()),
        sender,
    ));
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.recv().await {
            if let console::Event::Feed(console::FeedEvent::Snapshot(s)) = event {
                return Some(s);
            }
        }
        None
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got.doses.since_start, 1);
    feed.abort();
    server.stop().await;
}

/// A server of the test campaign on `addr` (port 0 for any), until `stop` is sent.
async fn serve_campaign(
    store: Arc<dyn store::Store>,
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = ingest::ServerConfig {
        data: dir.to_owned(),
        ..ingest::ServerConfig::default()
    };
    let state = ingest::build_state(store, dir, &config).await.unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        ingest::serve(listener, state, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, task)
}

/// The console on an 80×24 terminal: everything fits; the server stops (the console says
/// "Offline" and keeps the figures), a new server starts on the same port and data (the
/// console is "● live" again by itself); `q` leaves the terminal in cooked mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_at_80x24_reconnects_to_a_restarted_server() {
    if !tmux_ready("console_at_80x24_reconnects_to_a_restarted_server") {
        return;
    }
    let campaign = common::campaign().await;
    let dir = campaign.dir.path().to_owned();
    let (addr, stop, task) =
        serve_campaign(campaign.store.clone(), &dir, "127.0.0.1:0".parse().unwrap()).await;
    let command = format!(
        "NO_COLOR=1 VAXCAMP_LOG=warn VAXCAMP_TOKEN='{}' '{}' console --server 'http://{addr}'; \
         echo \"console exited with status $?\"; stty -a; exec sleep 3600",
        campaign.observer,
        env!("CARGO_BIN_EXE_vaxcamp"),
    );
    let tmux = tokio::task::block_in_place(|| Tmux::start("restart", &command, 80, 24));
    let wait = Duration::from_secs(30);
    tokio::task::block_in_place(|| {
        let screen = tmux.wait_for("the live overview at 80×24", wait, |s| {
            s.contains("● live").then(|| s.to_owned())
        });
        // Every box of the overview and the key line are on the screen.
        for part in [
            "┌ Doses",
            "┌ Campaign",
            "┌ Server",
            "Latency",
            "Errors",
            "q quit",
        ] {
            assert!(screen.contains(part), "{part} at 80×24:\n{screen}");
        }
        // The layout fills the pane exactly: the key line is its 24th and last row.
        let rows: Vec<&str> = screen.lines().collect();
        assert!(
            rows.len() == 24 && rows[23].contains("q quit"),
            "the key line on row 24:\n{screen}"
        );
    });

    // The server stops: the console says so.
    let _ = stop.send(());
    task.await.unwrap();
    tokio::task::block_in_place(|| {
        tmux.wait_for("the offline banner", wait, |s| {
            (s.contains("Offline:") && s.contains("offline, retry in")).then_some(())
        });
    });

    // A new server on the same data and port (the store reopened, as after a restart).
    drop(campaign.store);
    let deadline = Instant::now() + wait;
    let store: Arc<dyn store::Store> = loop {
        match store::EmbeddedStore::open(
            &dir,
            &store::EmbeddedOptions {
                shards: 2,
                ..Default::default()
            },
        ) {
            Ok(store) => break Arc::new(store),
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reopen the store: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (again, stop, task) = serve_campaign(store, &dir, addr).await;
    assert_eq!(again, addr);
    tokio::task::block_in_place(|| {
        tmux.wait_for("the console live again", wait, |s| {
            (s.contains("● live") && !s.contains("Offline")).then_some(())
        });
        tmux.keys(&["q"]);
        let screen = tmux.wait_for("stty's report after q", wait, |s| {
            (s.contains("console exited with status") && s.contains("icanon")).then(|| s.to_owned())
        });
        assert!(screen.contains("console exited with status 0"), "{screen}");
        assert!(cooked(&screen), "raw mode is off after q: {screen}");
    });
    let _ = stop.send(());
    task.await.unwrap();
}

/// A panic while the console is on screen: the hook gives the terminal back (normal screen,
/// cooked mode) before the panic message prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_restores_the_terminal() {
    if !tmux_ready("a_panic_restores_the_terminal") {
        return;
    }
    // No server needed: the console draws its first screen (connecting) and panics.
    let command = format!(
        "{}=1 RUST_BACKTRACE=0 NO_COLOR=1 VAXCAMP_TOKEN=x '{}' console --server 'http://127.0.0.1:9'; \
         echo \"console exited with status $?\"; stty -a; exec sleep 3600",
        console::TEST_PANIC_ENV,
        env!("CARGO_BIN_EXE_vaxcamp"),
    );
    let tmux = tokio::task::block_in_place(|| Tmux::start("panic", &command, 80, 24));
    tokio::task::block_in_place(|| {
        let screen = tmux.wait_for(
            "the console to panic and exit",
            Duration::from_secs(30),
            |s| {
                (s.contains("console exited with status") && s.contains("icanon"))
                    .then(|| s.to_owned())
            },
        );
        assert!(
            screen.contains("console exited with status 101"),
            "{screen}"
        );
        assert!(
            screen.contains("panics on purpose"),
            "the message shows: {screen}"
        );
        assert!(
            !screen.contains("Overview"),
            "the alternate screen is gone: {screen}"
        );
        assert!(cooked(&screen), "raw mode is off after a panic: {screen}");
    });
}
