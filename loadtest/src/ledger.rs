//! The acknowledged-dose ledger: every dose the server acknowledged, written down by the generator,
//! and the check that the server's store holds each one exactly once.
//!
//! "Acknowledged means durable" is the promise under test: crash and outage tests run the generator
//! with `--ledger`, break the server in the middle, and then run [`check`]. A dose missing from the
//! store after its acknowledgement is a lost dose; one stored twice is a duplicate.
//!
//! File format: one line per acknowledged dose, `<dose_id>,<person_code>`, appended (so several runs
//! can share a file). Blank lines and lines starting with `#` are ignored.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::client::{self, Endpoints, HttpClient};

/// The most ids `POST /v1/doses:lookup` accepts per request.
pub const MAX_LOOKUP_CHUNK: usize = 10_000;

/// Why the ledger could not be written or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The ledger file could not be opened, read or written.
    #[error("ledger file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of the ledger file is not `<dose_id>,<person_code>`.
    #[error("ledger file {path}, line {line}: expected `<dose_id>,<person_code>`, found {text:?}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// The server could not be asked.
    #[error("dose lookup failed: {0}")]
    Lookup(String),
    /// The thread writing the ledger died; acknowledged doses may be missing from the file.
    #[error("the ledger writer failed: {0}")]
    Writer(String),
    /// The client could not be set up.
    #[error(transparent)]
    Client(#[from] client::ClientError),
}

/// One acknowledged dose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LedgerEntry {
    pub dose_id: Uuid,
    pub person_code: String,
}

/// Appends acknowledged doses to the ledger file from a dedicated thread.
///
/// Workers hand over entries in small batches through a bounded channel (filled by workers as the
/// server acknowledges doses, drained by the writer thread; when it is full, a worker waits, which
/// shows up as send lag rather than unbounded memory). The thread flushes to the file whenever the
/// channel runs dry, so lines reach the file within moments of the acknowledgement.
pub(crate) struct LedgerWriter {
    sender: mpsc::Sender<Vec<LedgerEntry>>,
    thread: std::thread::JoinHandle<Result<u64, LedgerError>>,
}

impl LedgerWriter {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let io = |source| LedgerError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let (sender, mut receiver) = mpsc::channel::<Vec<LedgerEntry>>(1024);
        let path = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("loadtest-ledger".into())
            .spawn(move || {
                let io = |source| LedgerError::Io {
                    path: path.clone(),
                    source,
                };
                let mut out = BufWriter::with_capacity(1 << 16, file);
                let mut written = 0;
                while let Some(entries) = receiver.blocking_recv() {
                    for entry in entries {
                        writeln!(out, "{},{}", entry.dose_id, entry.person_code).map_err(io)?;
                        written += 1;
                    }
                    if receiver.is_empty() {
                        out.flush().map_err(io)?;
                    }
                }
                out.flush().map_err(io)?;
                Ok(written)
            })
            .map_err(io)?;
        Ok(Self { sender, thread })
    }

    /// A handle for a worker.
    pub fn sender(&self) -> LedgerSender {
        LedgerSender {
            sender: self.sender.clone(),
            pending: Vec::new(),
        }
    }

    /// Waits for every entry to be written (every [`LedgerSender`] must be flushed and dropped
    /// first). Returns the number of entries written.
    pub async fn close(self) -> Result<u64, LedgerError> {
        drop(self.sender);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| LedgerError::Writer(e.to_string()))?
            .map_err(|_| LedgerError::Writer("its thread panicked".into()))?
    }
}

/// A worker's end of the ledger: buffers a few entries so the writer thread is woken per batch, not
/// per dose.
pub(crate) struct LedgerSender {
    sender: mpsc::Sender<Vec<LedgerEntry>>,
    pending: Vec<LedgerEntry>,
}

impl LedgerSender {
    /// Entries buffered before they are handed to the writer.
    const BATCH: usize = 64;

    pub async fn push(&mut self, entry: LedgerEntry) {
        self.pending.push(entry);
        if self.pending.len() >= Self::BATCH {
            self.flush().await;
        }
    }

    pub async fn flush(&mut self) {
        if !self.pending.is_empty() {
            let entries = std::mem::take(&mut self.pending);
            if self.sender.send(entries).await.is_err() {
                tracing::error!(
                    "the ledger writer stopped; acknowledged doses are missing from the ledger"
                );
            }
        }
    }
}

/// Reads a ledger file.
fn read_ledger(path: &Path) -> Result<Vec<LedgerEntry>, LedgerError> {
    let io = |source| LedgerError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut entries = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let malformed = || LedgerError::Malformed {
            path: path.to_owned(),
            line: number + 1,
            text: line.clone(),
        };
        let (id, person_code) = text.split_once(',').ok_or_else(malformed)?;
        let dose_id = Uuid::parse_str(id.trim()).map_err(|_| malformed())?;
        entries.push(LedgerEntry {
            dose_id,
            person_code: person_code.trim().to_owned(),
        });
    }
    Ok(entries)
}

/// A dose the store holds more than once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicatedDose {
    /// The dose.
    pub dose_id: Uuid,
    /// How many copies the store holds.
    pub copies: u64,
}

/// A dose the store holds under a different person than the one it was acknowledged for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MisattributedDose {
    /// The dose.
    pub dose_id: Uuid,
    /// The person in the ledger.
    pub ledger_person: String,
    /// The person in the store.
    pub stored_person: String,
}

/// The result of checking a ledger against the server's store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCheck {
    /// Lines in the ledger.
    pub entries: u64,
    /// Distinct dose ids in the ledger (a dose acknowledged twice, e.g. a retried request answered
    /// 200, appears twice in the ledger but must be stored once).
    pub unique: u64,
    /// Doses stored exactly once, under the right person.
    pub stored_once: u64,
    /// Acknowledged doses the store does not have: lost.
    pub missing: Vec<Uuid>,
    /// Doses stored more than once.
    pub duplicated: Vec<DuplicatedDose>,
    /// Doses stored under another person.
    pub misattributed: Vec<MisattributedDose>,
}

impl LedgerCheck {
    /// Every acknowledged dose is stored exactly once, under its person.
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.misattributed.is_empty()
    }
}

impl fmt::Display for LedgerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ledger: {} entries, {} distinct doses; {} stored exactly once, {} missing, {} duplicated, {} under another person",
            self.entries,
            self.unique,
            self.stored_once,
            self.missing.len(),
            self.duplicated.len(),
            self.misattributed.len()
        )?;
        const SHOWN: usize = 20;
        for id in self.missing.iter().take(SHOWN) {
            writeln!(f, "  missing    {id}")?;
        }
        for d in self.duplicated.iter().take(SHOWN) {
            writeln!(f, "  duplicated {} ({} copies)", d.dose_id, d.copies)?;
        }
        for m in self.misattributed.iter().take(SHOWN) {
            writeln!(
                f,
                "  misattributed {} (ledger {}, store {})",
                m.dose_id, m.ledger_person, m.stored_person
            )?;
        }
        let hidden = [
            self.missing.len(),
            self.duplicated.len(),
            self.misattributed.len(),
        ]
        .iter()
        .map(|n| n.saturating_sub(SHOWN))
        .sum::<usize>();
        if hidden > 0 {
            writeln!(f, "  ... and {hidden} more (see the JSON output)")?;
        }
        write!(
            f,
            "{}",
            if self.is_ok() {
                "OK: every acknowledged dose is stored exactly once"
            } else {
                "FAILED"
            }
        )
    }
}

#[derive(Serialize)]
struct LookupRequest<'a> {
    dose_ids: &'a [Uuid],
}

/// The answer of `POST /v1/doses:lookup`. Its `missing` list is not read: any id not reported as
/// found counts as missing, so a server that forgets to list an id cannot hide it.
#[derive(Deserialize)]
struct LookupAnswer {
    found: Vec<FoundDose>,
}

#[derive(Deserialize)]
struct FoundDose {
    dose_id: Uuid,
    person_code: String,
    copies: u64,
}

/// Checks that every dose in the ledger at `path` is in the server's store exactly once, asking
/// `POST /v1/doses:lookup` in chunks of `chunk` ids (at most [`MAX_LOOKUP_CHUNK`]).
///
/// # Errors
/// The ledger cannot be read, or the server cannot be asked (an error answer is an error, not a
/// "missing" verdict: only the server's explicit answer counts).
pub async fn check(
    server: &str,
    admin_token: &str,
    path: &Path,
    chunk: usize,
) -> Result<LedgerCheck, LedgerError> {
    let entries = read_ledger(path)?;
    let endpoints = Endpoints::new(server)?;
    let auth = client::bearer(admin_token)?;
    let client = HttpClient::new(1, Duration::from_secs(120));

    // Distinct ids in ledger order, with the person each was acknowledged for.
    let mut person_of: HashMap<Uuid, String> = HashMap::with_capacity(entries.len());
    let mut ids = Vec::with_capacity(entries.len());
    for entry in &entries {
        if let std::collections::hash_map::Entry::Vacant(vacant) = person_of.entry(entry.dose_id) {
            vacant.insert(entry.person_code.clone());
            ids.push(entry.dose_id);
        }
    }
    let mut result = LedgerCheck {
        entries: entries.len() as u64,
        unique: ids.len() as u64,
        ..LedgerCheck::default()
    };

    for ids in ids.chunks(chunk.clamp(1, MAX_LOOKUP_CHUNK)) {
        let body = serde_json::to_vec(&LookupRequest { dose_ids: ids })
            .map_err(|e| LedgerError::Lookup(e.to_string()))?;
        let request = HttpClient::post_json(endpoints.doses_lookup.clone(), Some(&auth), body);
        let answer = client
            .send(request)
            .await
            .map_err(|e| LedgerError::Lookup(format!("{} from {server}", e.code())))?;
        if !answer.status.is_success() {
            return Err(LedgerError::Lookup(format!(
                "{server} answered {} ({})",
                answer.status,
                client::error_code(&answer.body)
            )));
        }
        let answer: LookupAnswer = serde_json::from_slice(&answer.body)
            .map_err(|e| LedgerError::Lookup(format!("unexpected answer shape: {e}")))?;

        let mut seen: HashSet<Uuid> = HashSet::with_capacity(ids.len());
        for found in answer.found {
            let Some(ledger_person) = person_of.get(&found.dose_id) else {
                continue; // Not asked about in this chunk; ignore rather than guess.
            };
            if !seen.insert(found.dose_id) {
                continue;
            }
            if found.copies == 0 {
                result.missing.push(found.dose_id);
            } else if found.copies > 1 {
                result.duplicated.push(DuplicatedDose {
                    dose_id: found.dose_id,
                    copies: found.copies,
                });
            } else if found.person_code != *ledger_person {
                result.misattributed.push(MisattributedDose {
                    dose_id: found.dose_id,
                    ledger_person: ledger_person.clone(),
                    stored_person: found.person_code,
                });
            } else {
                result.stored_once += 1;
            }
        }
        result
            .missing
            .extend(ids.iter().filter(|id| !seen.contains(id)));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_skips_comments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.csv");
        let ids: Vec<Uuid> = (0..3).map(|i| Uuid::from_u128(i + 1)).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let writer = LedgerWriter::open(&path).expect("open");
            let mut sender = writer.sender();
            for (i, id) in ids.iter().enumerate() {
                sender
                    .push(LedgerEntry {
                        dose_id: *id,
                        person_code: format!("P{i:09}"),
                    })
                    .await;
            }
            sender.flush().await;
            drop(sender);
            assert_eq!(writer.close().await.expect("close"), 3);
        });
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("# a comment\n\n");
        std::fs::write(&path, text).expect("write");
        let entries = read_ledger(&path).expect("parse");
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[2],
            LedgerEntry {
                dose_id: ids[2],
                person_code: "P000000002".into()
            }
        );

        std::fs::write(&path, "not-a-uuid,P1\n").expect("write");
        assert!(matches!(
            read_ledger(&path),
            Err(LedgerError::Malformed { line: 1, .. })
        ));
    }
}
