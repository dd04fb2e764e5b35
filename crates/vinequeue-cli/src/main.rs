//! `vinequeue`: look inside a queue's log directory and administer its dead letters,
//! without the application and without knowing the item type.
//!
//! `inspect`, `verify` and `dump` read the files without taking the directory's lock and
//! without changing a byte, so they work on a directory a running queue holds.
//! `dead-letters redrive` and `dead-letters discard` change the logs: they take the
//! locks, and refuse while a queue holds the directory. See docs/operations.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use vinequeue::{Storage, StoredDeadLetter, DEAD_LETTER_DIR};
use vinequeue_wal::inspect::{self, Inspection};
use vinequeue_wal::{Wal, WalOptions};

/// Exit code of `verify` when it finds damage.
const DAMAGED: u8 = 2;

#[derive(Parser)]
#[command(
    name = "vinequeue",
    version,
    about = "Inspect and administer a VineQueue log directory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Segments, records pending, the acknowledged mark, the queue id, the dead letters
    /// and the damaged copies, read without opening the log.
    Inspect {
        /// The queue's directory (its `wal_path`).
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The queue's configuration (TOML, as `vinequeue::Config` reads it), to show the
        /// sizes against its limits (`wal_max_size`, `dead_letter_max_size`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Reads every frame and checks every checksum and the checkpoint: exit 0 when clean
    /// (a torn tail, which the next open cuts off, is reported but is not damage), 2
    /// when damage is found, 1 when the directory cannot be read.
    Verify {
        /// The queue's directory.
        dir: PathBuf,
    },
    /// Prints records with their sequence numbers (and keys, for redriven items).
    Dump {
        /// The queue's directory.
        dir: PathBuf,
        /// The first sequence number to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most records to print.
        #[arg(long)]
        limit: Option<u64>,
        /// How to print the payloads (postcard-encoded items, as the queue wrote them):
        /// hex, base64, text, or json (items that are strings holding JSON).
        #[arg(long, value_enum, default_value_t = Format::Hex)]
        format: Format,
        /// Dump the dead-letter log instead of the main log.
        #[arg(long)]
        dead_letters: bool,
    },
    /// The dead-letter log: list, redrive or discard letters.
    DeadLetters {
        /// The queue's directory.
        dir: PathBuf,
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Lists the letters waiting: their number, the item's key, why, and the error.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Enqueues every letter's item again (keeping its key) into the main log, then
    /// removes the letters. Refused while a queue holds the directory.
    Redrive,
    /// Removes the given letters for good. Refused while a queue holds the directory.
    Discard {
        /// Dead-letter numbers (the first column of `list`).
        #[arg(required = true)]
        seqs: Vec<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Hexadecimal.
    Hex,
    /// Base64 (standard alphabet, padded).
    Base64,
    /// The bytes as text (UTF-8, invalid bytes replaced).
    Text,
    /// Items that are strings holding JSON (`Queue<String>` of JSON documents): the
    /// string decoded from postcard and printed as compact JSON; a payload that is not
    /// such a string is printed in hex, marked `!`.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vinequeue: {e}");
            ExitCode::FAILURE
        }
    }
}

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

fn run(command: Command) -> Fallible<ExitCode> {
    match command {
        Command::Inspect { dir, json, config } => {
            let mut report = Report::of(&dir)?;
            if let Some(path) = config {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let config: vinequeue::Config =
                    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                report.limits = Some(Limits {
                    wal_max_size: config.get_wal_max_size(),
                    dead_letter_max_size: config.get_dead_letter_max_size(),
                });
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { dir } => verify(&dir),
        Command::Dump {
            dir,
            from,
            limit,
            format,
            dead_letters,
        } => {
            let dir = if dead_letters {
                dir.join(DEAD_LETTER_DIR)
            } else {
                dir
            };
            let mut left = limit.unwrap_or(u64::MAX);
            inspect::records(&dir, from, &mut |seq, key, bytes| {
                if left == 0 {
                    return false;
                }
                left -= 1;
                let key = key.map_or(String::new(), |k| format!(" key={k}"));
                println!("{seq}{key} {}", show(bytes, format));
                true
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters { dir, action } => dead_letters(&dir, action),
    }
}

fn verify(dir: &Path) -> Fallible<ExitCode> {
    let mut damaged = false;
    for (name, log) in [
        ("log", dir.to_path_buf()),
        ("dead-letter log", dir.join(DEAD_LETTER_DIR)),
    ] {
        if !log.exists() {
            continue;
        }
        let found = inspect::inspect(&log)?;
        let records: u64 = found.segments.iter().map(|s| s.records).sum();
        if let Some(why) = &found.checkpoint_problem {
            damaged = true;
            println!("{name}: checkpoint: {why}");
        }
        for s in &found.segments {
            for p in &s.problems {
                let kind = if p.torn_tail {
                    "torn tail (cut off at the next open)"
                } else {
                    "DAMAGE"
                };
                // The damaged range: from the frame after the last intact one to the end
                // of this segment's numbers (the next segment's first, if any).
                let from = s.last_seq.map_or(s.first_seq, |l| l + 1);
                let range = match found.segments.iter().find(|n| n.first_seq > s.first_seq) {
                    Some(next) if next.first_seq > from => {
                        format!("records {from}..{}", next.first_seq - 1)
                    }
                    _ => format!("records from {from}"),
                };
                println!(
                    "{name}: {} at offset {} ({range}): {kind}: {}",
                    s.name, p.offset, p.reason
                );
                damaged |= !p.torn_tail;
            }
        }
        println!(
            "{name}: {} segment(s), {records} intact record(s), {}",
            found.segments.len(),
            if found.is_clean() { "clean" } else { "damaged" }
        );
    }
    Ok(if damaged {
        ExitCode::from(DAMAGED)
    } else {
        ExitCode::SUCCESS
    })
}

fn dead_letters(dir: &Path, action: DeadLetterAction) -> Fallible<ExitCode> {
    let dead_dir = dir.join(DEAD_LETTER_DIR);
    match action {
        DeadLetterAction::List { json } => {
            let letters = waiting_letters(&dead_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                println!("{} letter(s)", letters.len());
                for l in &letters {
                    println!(
                        "{}\tkey {}\t{}\t{}\t{} byte(s)",
                        l.dead_letter_seq, l.key, l.reason, l.error, l.payload_bytes
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLetterAction::Discard { seqs } => {
            let dead = open_locked(&dead_dir, "the dead-letter log")?;
            dead.ack_all(&seqs)?;
            dead.sync()?;
            println!("discarded {} letter(s)", seqs.len());
            Ok(ExitCode::SUCCESS)
        }
        DeadLetterAction::Redrive => {
            let main = open_locked(dir, "the log")?;
            let dead = open_locked(&dead_dir, "the dead-letter log")?;
            let letters = waiting_letters(&dead_dir)?;
            // The items first, durable, then the letters removed: a crash in between
            // leaves both, and the next open of the queue removes the letters whose
            // item waits in the log (by key).
            for l in &letters {
                main.append_keyed(&l.payload, l.key)?;
            }
            main.sync()?;
            let done: Vec<u64> = letters.iter().map(|l| l.dead_letter_seq).collect();
            dead.ack_all(&done)?;
            dead.sync()?;
            println!("redrove {} letter(s)", letters.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens a log for changing it: the lock refuses while a queue holds the directory.
fn open_locked(dir: &Path, what: &str) -> Fallible<Wal> {
    match Wal::open(dir, WalOptions::default()) {
        Ok(wal) => Ok(wal),
        Err(vinequeue::Error::Locked(path)) => Err(format!(
            "{what} in {} is held by a running queue: stop it first (inspect, verify and dump \
             work while it runs)",
            path.display()
        )
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// A letter as listed.
#[derive(Serialize)]
struct Letter {
    dead_letter_seq: u64,
    key: u64,
    seq: u64,
    reason: String,
    error: String,
    payload_bytes: usize,
    #[serde(skip)]
    payload: Vec<u8>,
}

/// The letters not yet removed, read without opening the log.
fn waiting_letters(dead_dir: &Path) -> Fallible<Vec<Letter>> {
    let mut out = Vec::new();
    if !dead_dir.exists() {
        return Ok(out);
    }
    let found = inspect::inspect(dead_dir)?;
    let acked = found.checkpoint.as_ref().map_or(0, |c| c.acked_through);
    let above: Vec<(u64, u64)> = found.checkpoint.map(|c| c.acked_above).unwrap_or_default();
    let mut failure = None;
    inspect::records(dead_dir, acked + 1, &mut |dseq, _, bytes| {
        if above.iter().any(|&(lo, hi)| lo <= dseq && dseq <= hi) {
            return true;
        }
        match StoredDeadLetter::<()>::from_record(dseq, bytes) {
            Ok(l) => out.push(Letter {
                dead_letter_seq: dseq,
                key: l.key,
                seq: l.seq,
                reason: l.reason,
                error: l.error,
                payload_bytes: l.payload.len(),
                payload: l.payload,
            }),
            Err(e) => failure = Some(e),
        }
        failure.is_none()
    })?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

fn show(bytes: &[u8], format: Format) -> String {
    match format {
        Format::Hex => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Format::Base64 => base64(bytes),
        Format::Text => String::from_utf8_lossy(bytes).into_owned(),
        Format::Json => match postcard_string(bytes)
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        {
            Some(value) => value.to_string(),
            None => format!("!{}", show(bytes, Format::Hex)),
        },
    }
}

/// The string a postcard encoding of a `String` holds: a varint length, then the bytes.
fn postcard_string(bytes: &[u8]) -> Option<&str> {
    let (mut len, mut shift, mut at) = (0usize, 0u32, 0usize);
    loop {
        let b = *bytes.get(at)?;
        len |= usize::from(b & 0x7f).checked_shl(shift)?;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let text = bytes.get(at..at.checked_add(len)?)?;
    (at + len == bytes.len()).then_some(())?;
    std::str::from_utf8(text).ok()
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What `inspect` prints.
#[derive(Serialize)]
struct Report {
    dir: PathBuf,
    queue_id: Option<String>,
    /// Hex of the producer's source position a reopen hands back.
    source_position: Option<String>,
    acked_through: u64,
    next_seq: Option<u64>,
    synced_through: u64,
    records_pending: u64,
    bytes_on_disk: u64,
    checkpoint_problem: Option<String>,
    segments: Vec<Segment>,
    damaged_copies: Vec<(String, u64)>,
    unknown_files: Vec<String>,
    dead_letters: Option<DeadLetterSummary>,
    /// The configured limits, with `--config`.
    limits: Option<Limits>,
}

#[derive(Serialize)]
struct Limits {
    wal_max_size: u64,
    dead_letter_max_size: u64,
}

#[derive(Serialize)]
struct Segment {
    name: String,
    bytes: u64,
    first_seq: u64,
    last_seq: Option<u64>,
    records: u64,
    state: &'static str,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct DeadLetterSummary {
    letters: usize,
    oldest: Option<u64>,
    reasons: std::collections::BTreeMap<String, usize>,
    bytes_on_disk: u64,
}

impl Report {
    fn of(dir: &Path) -> Fallible<Self> {
        let found: Inspection = inspect::inspect(dir)?;
        let last = found.segments.len();
        let dead_dir = dir.join(DEAD_LETTER_DIR);
        let dead_letters = if dead_dir.exists() {
            let letters = waiting_letters(&dead_dir)?;
            let mut reasons = std::collections::BTreeMap::new();
            for l in &letters {
                *reasons.entry(l.reason.clone()).or_insert(0) += 1;
            }
            Some(DeadLetterSummary {
                letters: letters.len(),
                oldest: letters.first().map(|l| l.dead_letter_seq),
                reasons,
                bytes_on_disk: inspect::inspect(&dead_dir)?.total_bytes,
            })
        } else {
            None
        };
        Ok(Report {
            dir: dir.to_path_buf(),
            queue_id: found.queue_id.map(|id| id.to_string()),
            source_position: found
                .source_position
                .as_ref()
                .map(|p| p.iter().map(|b| format!("{b:02x}")).collect()),
            acked_through: found.checkpoint.as_ref().map_or(0, |c| c.acked_through),
            next_seq: found.checkpoint.as_ref().map(|c| c.next_seq),
            synced_through: found.checkpoint.as_ref().map_or(0, |c| c.synced_through),
            records_pending: found.pending(),
            bytes_on_disk: found.total_bytes,
            checkpoint_problem: found.checkpoint_problem.clone(),
            segments: found
                .segments
                .iter()
                .enumerate()
                .map(|(i, s)| Segment {
                    name: s.name.clone(),
                    bytes: s.size,
                    first_seq: s.first_seq,
                    last_seq: s.last_seq,
                    records: s.records,
                    state: if i + 1 == last { "active" } else { "sealed" },
                    problems: s
                        .problems
                        .iter()
                        .map(|p| {
                            let kind = if p.torn_tail { "torn tail" } else { "damage" };
                            format!("{kind} at offset {}: {}", p.offset, p.reason)
                        })
                        .collect(),
                })
                .collect(),
            damaged_copies: found.damaged_copies.clone(),
            unknown_files: found.unknown_files.clone(),
            dead_letters,
            limits: None,
        })
    }

    fn text(&self) -> String {
        let mut t = String::new();
        let id = self.queue_id.as_deref().unwrap_or("(none)");
        t.push_str(&format!("directory       {}\n", self.dir.display()));
        t.push_str(&format!("queue id        {id}\n"));
        if let Some(p) = &self.source_position {
            t.push_str(&format!("source position {p} (hex)\n"));
        }
        t.push_str(&format!("acked through   {}\n", self.acked_through));
        if let Some(next) = self.next_seq {
            t.push_str(&format!(
                "numbers below   {next} may have been handed out\n"
            ));
        }
        t.push_str(&format!("synced through  {}\n", self.synced_through));
        t.push_str(&format!(
            "pending         {} record(s)\n",
            self.records_pending
        ));
        t.push_str(&format!("on disk         {} byte(s)", self.bytes_on_disk));
        if let Some(l) = &self.limits {
            t.push_str(&format!(
                " of wal_max_size {} ({:.1}%)",
                l.wal_max_size,
                100.0 * self.bytes_on_disk as f64 / l.wal_max_size.max(1) as f64
            ));
        }
        t.push('\n');
        if let Some(why) = &self.checkpoint_problem {
            t.push_str(&format!("checkpoint      UNREADABLE: {why}\n"));
        }
        t.push_str("segments\n");
        for s in &self.segments {
            let range = match s.last_seq {
                Some(last) => format!("{}..={last}", s.first_seq),
                None => format!("{}.. (empty)", s.first_seq),
            };
            t.push_str(&format!(
                "  {}  {:>10} B  {:<22} {:>8} record(s)  {}\n",
                s.name, s.bytes, range, s.records, s.state
            ));
            for p in &s.problems {
                t.push_str(&format!("      {p}\n"));
            }
        }
        for (name, bytes) in &self.damaged_copies {
            t.push_str(&format!("damaged/{name}  {bytes} B\n"));
        }
        for name in &self.unknown_files {
            t.push_str(&format!("unknown file    {name}\n"));
        }
        if let Some(d) = &self.dead_letters {
            t.push_str(&format!(
                "dead letters    {} letter(s), {} byte(s) on disk",
                d.letters, d.bytes_on_disk
            ));
            if let Some(l) = &self.limits {
                t.push_str(&format!(
                    " of dead_letter_max_size {}",
                    l.dead_letter_max_size
                ));
            }
            if let Some(oldest) = d.oldest {
                t.push_str(&format!(", oldest #{oldest}"));
            }
            t.push('\n');
            for (reason, n) in &d.reasons {
                t.push_str(&format!("  {reason}: {n}\n"));
            }
        }
        t
    }
}
