//! The terminal: taking it over (raw mode, alternate screen) and always giving it back, on a
//! normal exit (a Drop guard) and on a panic (a hook that restores before the message prints).
//!
//! While the console owns the terminal, log lines written through [`log_writer`] are held back
//! (up to [`HELD_LOG_LIMIT`] bytes) and printed once the terminal is restored, so a log line
//! never scribbles over the screen.

use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// True while the console draws on the terminal.
static IN_USE: AtomicBool = AtomicBool::new(false);
/// Log output held while the terminal is in use.
static HELD: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// At most this much log output is held; past it, the rest is dropped and counted.
pub const HELD_LOG_LIMIT: usize = 1 << 20;
static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static PANIC_HOOK: Once = Once::new();

/// Whether the console is drawing on the terminal right now.
pub fn terminal_in_use() -> bool {
    IN_USE.load(Ordering::Acquire)
}

/// Standard error, except while the console is on screen, when lines are held until it closes.
/// Give it to the log subscriber: `tracing_subscriber::fmt().with_writer(console::log_writer)`.
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// See [`log_writer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if terminal_in_use() {
            let mut held = HELD
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if held.len() + buf.len() <= HELD_LOG_LIMIT {
                held.extend_from_slice(buf);
            } else {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            Ok(buf.len())
        } else {
            io::stderr().write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if terminal_in_use() {
            Ok(())
        } else {
            io::stderr().flush()
        }
    }
}

/// Writes what was held while the console was on screen to `out`.
fn release_held_logs(out: &mut impl Write) {
    let held = std::mem::take(
        &mut *HELD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let _ = out.write_all(&held);
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(
            out,
            "({dropped} log lines were dropped while the console was on screen)"
        );
    }
}

/// Gives the terminal back: cooked mode, the normal screen, a visible cursor. Only the first
/// call after [`TerminalGuard::enter`] does anything: after a panic both the hook and the
/// guard's drop call it, and leaving the alternate screen a second time would move the cursor
/// back over the panic message (the terminal restores the cursor it saved on entering).
pub fn restore() {
    if !IN_USE.swap(false, Ordering::AcqRel) {
        return;
    }
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    release_held_logs(&mut io::stderr());
}

/// The terminal, owned by the console until dropped.
pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl std::fmt::Debug for TerminalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalGuard").finish_non_exhaustive()
    }
}

impl TerminalGuard {
    /// Takes over the terminal. Installs (once) a panic hook that restores it first.
    ///
    /// # Errors
    /// When the terminal cannot be switched to raw mode or the alternate screen.
    pub fn enter() -> io::Result<Self> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        IN_USE.store(true, Ordering::Release);
        let entered = (|| {
            enable_raw_mode()?;
            execute!(io::stdout(), EnterAlternateScreen, Hide)?;
            Terminal::new(CrosstermBackend::new(io::stdout()))
        })();
        match entered {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_wait_while_the_console_is_on_screen() {
        IN_USE.store(true, Ordering::Release);
        let mut writer = log_writer();
        assert!(writer.write_all(b"held line\n").is_ok());
        let too_much = vec![b'x'; HELD_LOG_LIMIT];
        assert!(writer.write_all(&too_much).is_ok(), "never an error");
        IN_USE.store(false, Ordering::Release);
        let mut out = Vec::new();
        release_held_logs(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "held line\n(1 log lines were dropped while the console was on screen)\n"
        );
    }
}
