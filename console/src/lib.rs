//! The steering committee's live console: a terminal UI (ratatui) over the server's live feed,
//! for a wall screen or an SSH session.
//!
//! `vaxcamp console --server URL --token TOKEN` follows `GET /v1/live/stream` (server-sent
//! events, one snapshot a second) with an observer or admin token, and shows doses per second,
//! totals, latency, queues and errors; a drill-down from the nation to provinces, districts
//! and sites; stock and days of supply, with a proposal for splitting a shipment
//! (`GET /v1/allocation`); the analytics lag; and the server's alerts. When the server goes away
//! the console says so, keeps the last figures on screen and reconnects with backoff.
//!
//! # Layout
//! - [`feed`]: the snapshot types (mirroring the server's JSON) and the task that follows the
//!   event stream, parses it and reconnects.
//! - [`allocation`]: the allocation proposal's types (mirroring the server's JSON) and the
//!   request that asks for one, run on a task so that drawing never waits for it.
//! - [`app`]: [`App`], the state; [`Event`], the one enum that keys, ticks and the feed send;
//!   [`App::update`], the only place state changes. No I/O, no clock.
//! - [`ui`]: drawing, as `impl Widget for &App`: header, banner, the four views, footer, help.
//! - [`theme`]: colours, and the monochrome theme used when `NO_COLOR` is set.
//! - [`format`]: numbers, rates, days and clock times as the console prints them.
//! - [`term`]: the terminal guard (raw mode, alternate screen, restored on drop and on panic) and
//!   the log writer that holds log lines while the console is on screen.
//!
//! The event loop ([`run_until`]) joins four sources into one bounded channel: a thread
//! reading keys, a task ticking once a second, the feed task, and the allocation request the
//! user last sent (one at a time; a new one replaces it). It applies every waiting event, starts
//! a request if the state asks for one, then draws once.

pub mod allocation;
pub mod app;
pub mod feed;
pub mod format;
pub mod sample;
pub mod term;
pub mod theme;
pub mod ui;

use std::future::Future;
use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use app::{App, Event, View};
pub use feed::{FeedConfig, FeedEvent, Snapshot};
pub use term::{LogWriter, log_writer, terminal_in_use};
pub use theme::Theme;
use tokio::sync::mpsc;

/// Set in the environment, the console panics right after drawing its first screen: the test
/// that the panic hook restores the terminal uses it.
pub const TEST_PANIC_ENV: &str = "VAXCAMP_CONSOLE_TEST_PANIC";

/// `vaxcamp console`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// The server's base URL.
    #[arg(long, env = "VAXCAMP_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An observer (or admin) token: `vaxcamp token add --role observer`.
    #[arg(long, env = "VAXCAMP_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Mark sites with fewer days of supply than this (default: the server's threshold, 3).
    #[arg(long)]
    pub low_stock_days: Option<f64>,
}

/// Why the console could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    #[error(
        "the console needs a terminal; run it in one, or read GET /v1/live for a JSON snapshot"
    )]
    NotATerminal,
    #[error("terminal error: {0}")]
    Terminal(#[from] io::Error),
}

/// Runs the console until the user quits (`q`, Ctrl-C).
///
/// # Errors
/// When stdout is not a terminal or the terminal fails. An unreachable server is not an error:
/// the console shows it and retries.
pub async fn run(args: ConsoleArgs) -> Result<(), ConsoleError> {
    run_until(args, std::future::pending()).await
}

/// Runs the console until the user quits or `stop` completes (the demo stops it when its
/// traffic ends).
///
/// # Errors
/// See [`run`].
pub async fn run_until(
    args: ConsoleArgs,
    stop: impl Future<Output = ()>,
) -> Result<(), ConsoleError> {
    if !io::stdout().is_terminal() {
        return Err(ConsoleError::NotATerminal);
    }
    // Filled by the key thread, the ticker and the feed; drained by the loop below, which only
    // draws. A full channel makes the senders wait, so a slow terminal slows the feed rather
    // than growing memory.
    let (sender, mut events) = mpsc::channel::<Event>(64);
    let feed = tokio::spawn(feed::follow(
        FeedConfig::new(args.server.clone(), args.token.clone()),
        sender.clone(),
    ));
    let ticker = tokio::spawn(tick(sender.clone()));
    // Allocation requests answer on the same channel; `allocations` keeps a sender for them.
    let allocations = sender.clone();
    let allocation_client =
        allocation::AllocationClient::new(args.server.clone(), args.token.clone());
    let keys_stop = Arc::new(AtomicBool::new(false));
    let keys = {
        let stop = keys_stop.clone();
        std::thread::Builder::new()
            .name("console-keys".into())
            .spawn(move || read_keys(&sender, &stop))?
    };

    let result = async {
        let mut guard = term::TerminalGuard::enter()?;
        let mut app = App::new(args.server.clone(), Theme::from_env(), feed::unix_now());
        app.low_stock_days = args.low_stock_days;
        guard
            .terminal
            .draw(|frame| frame.render_widget(&app, frame.area()))?;
        // For the end-to-end test that a panic gives the terminal back (tests/console_tmux.rs):
        // never set otherwise.
        if std::env::var_os(TEST_PANIC_ENV).is_some() {
            panic!("{TEST_PANIC_ENV} is set: the console panics on purpose after its first screen");
        }
        tokio::pin!(stop);
        // SIGTERM and SIGHUP (the terminal went away) end the console like `q`, so that the
        // terminal is restored rather than left in raw mode.
        let terminated = terminated();
        tokio::pin!(terminated);
        // The allocation request in flight: aborted when the user sends another or quits.
        let mut request: Option<tokio::task::JoinHandle<()>> = None;
        let result = loop {
            tokio::select! {
                () = &mut stop => break Ok(()),
                () = &mut terminated => break Ok(()),
                event = events.recv() => {
                    let Some(event) = event else { break Ok(()) };
                    app.update(event);
                    while let Ok(event) = events.try_recv() {
                        app.update(event);
                    }
                    if app.quit {
                        break Ok(());
                    }
                    if let Some((id, query)) = app.take_allocation_request() {
                        if let Some(previous) = request.take() {
                            previous.abort();
                        }
                        match &allocation_client {
                            Ok(client) => {
                                request = Some(tokio::spawn(allocation::fetch(
                                    client.clone(),
                                    id,
                                    query,
                                    allocations.clone(),
                                )));
                            }
                            Err(message) => app.update(Event::Allocation {
                                id,
                                answer: Err(message.clone()),
                            }),
                        }
                    }
                    if let Err(e) = guard.terminal.draw(|frame| frame.render_widget(&app, frame.area())) {
                        break Err(e.into());
                    }
                }
            }
        };
        if let Some(request) = request {
            request.abort();
        }
        result
    }
    .await;

    keys_stop.store(true, Ordering::Release);
    feed.abort();
    ticker.abort();
    // Dropping the receiver releases a key thread blocked on a full channel.
    drop(events);
    drop(allocations);
    if keys.join().is_err() {
        tracing::warn!("the key reader panicked");
    }
    result
}

/// Completes on SIGTERM or SIGHUP; never where those cannot be listened for.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// One tick a second, carrying the time.
async fn tick(events: mpsc::Sender<Event>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        if events
            .send(Event::Tick {
                now: feed::unix_now(),
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Reads keys and resizes until `stop` is set or the console stops listening.
fn read_keys(events: &mpsc::Sender<Event>, stop: &AtomicBool) {
    use crossterm::event::{Event as TermEvent, poll, read};
    while !stop.load(Ordering::Acquire) {
        match poll(Duration::from_millis(200)) {
            Ok(false) => {}
            Ok(true) => {
                let event = match read() {
                    Ok(TermEvent::Key(key)) => Event::Key(key),
                    Ok(TermEvent::Resize(..)) => Event::Resize,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the keyboard");
                        return;
                    }
                };
                if events.blocking_send(event).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the keyboard");
                return;
            }
        }
    }
}
