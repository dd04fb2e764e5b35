//! `cargo run --release -p vinequeue-benches -- report [--quick | --smoke] [--out FILE]`:
//! every workload, VineQueue beside its baselines and peers in the same run, written to
//! `docs/benchmarks.md` with SVG plots in `docs/img/`.
//!
//! * the end-to-end durable workloads of [`vinequeue_benches::e2e`] (durable delivery
//!   under `Periodic` and `Os`, replay of a backlog at several sizes), run here;
//! * memory mode against crossbeam-channel and flume (`compare`), the log and the durable
//!   queue against plain file I/O and the durable peers (`wal_compare`), the async
//!   adapter against tokio's mpsc (`async_compare`): those binaries, run in turn, their
//!   reports included.
//!
//! `--quick` runs everything smaller (under three minutes on two cores); `--smoke` runs
//! it tiny (seconds: `.ci/run` uses it so that the command cannot rot) and writes to a
//! temporary file unless `--out` says otherwise. A line on stderr says which workload
//! and which round is running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vinequeue::SyncMode;
use vinequeue_benches::e2e;
use vinequeue_benches::median;
use vinequeue_benches::plots::{self, Axes, Series};
use vinequeue_benches::report::machine_facts;

mod sibling_plots;

const USAGE: &str = "usage: vinequeue-benches report [--quick | --smoke] [--out FILE] [--no-peers]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Size {
    Full,
    Quick,
    Smoke,
}

struct Plan {
    size: Size,
    rounds: usize,
    durable_items: u64,
    backlogs: Vec<u64>,
    out: PathBuf,
    siblings: bool,
}

/// One workload's rates (items/s) over the rounds, VineQueue's and its baseline's.
struct Measured {
    name: String,
    ours: Vec<f64>,
    base: Vec<f64>,
}

impl Measured {
    fn ratio(&self) -> f64 {
        median(&self.ours) / median(&self.base)
    }
}

fn progress(workload: &str, round: usize, rounds: usize) {
    eprintln!("[report] {workload}: round {round}/{rounds}");
}

fn millions(v: f64) -> String {
    format!("{:.2}", v / 1e6)
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    format!("{} – {}", millions(lo), millions(hi))
}

fn durable(plan: &Plan, scratch: &Path) -> Vec<Measured> {
    let modes = [
        (
            "Periodic(100 ms)",
            SyncMode::Periodic(Duration::from_millis(100)),
        ),
        ("Os", SyncMode::Os),
    ];
    let mut out: Vec<Measured> = modes
        .iter()
        .map(|(name, _)| Measured {
            name: format!("durable delivery, `{name}`"),
            ours: Vec::new(),
            base: Vec::new(),
        })
        .collect();
    let n = plan.durable_items;
    for round in 1..=plan.rounds {
        progress("durable delivery", round, plan.rounds);
        let base = n as f64 / e2e::durable_baseline(scratch, n);
        for (m, (_, mode)) in out.iter_mut().zip(modes) {
            m.ours.push(n as f64 / e2e::durable(scratch, mode, n));
            m.base.push(base);
        }
    }
    out
}

/// Durable delivery from an async producer against the blocking producer, same
/// workload, both in every round.
fn durable_async(plan: &Plan, scratch: &Path) -> Measured {
    let mode = SyncMode::Periodic(Duration::from_millis(100));
    let mut m = Measured {
        name: "durable delivery, `Periodic(100 ms)`, an `AsyncQueue` producer".into(),
        ours: Vec::new(),
        base: Vec::new(),
    };
    let n = plan.durable_items;
    for round in 1..=plan.rounds {
        progress(
            "durable delivery from an async producer",
            round,
            plan.rounds,
        );
        m.base.push(n as f64 / e2e::durable(scratch, mode, n));
        m.ours.push(n as f64 / e2e::durable_async(scratch, mode, n));
    }
    m
}

fn replay(plan: &Plan, scratch: &Path) -> Vec<(u64, Measured)> {
    let mut out = Vec::new();
    for &n in &plan.backlogs {
        let mut m = Measured {
            name: format!("replay of {n} items"),
            ours: Vec::new(),
            base: Vec::new(),
        };
        let records = scratch.join("replay-baseline-records");
        e2e::write_records(&records, n);
        for round in 1..=plan.rounds {
            progress(&format!("replay of {n} items"), round, plan.rounds);
            let dir = tempfile::tempdir_in(scratch).expect("a scratch directory");
            e2e::leave_backlog(dir.path(), n);
            m.ours.push(n as f64 / e2e::replay(dir.path(), n));
            m.base.push(n as f64 / e2e::replay_baseline(&records, n));
        }
        let _ = std::fs::remove_file(&records);
        out.push((n, m));
    }
    out
}

/// Runs sibling binary `bin` with `args` (built with the same profile as this one) and
/// returns its report without its machine table, its headings one level down.
/// Its plot data goes into `data` (see `plots`).
fn sibling(bin: &str, args: &[&str], data: &Path) -> String {
    eprintln!("[report] {bin} {}", args.join(" "));
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.env(plots::PLOT_DATA, data);
    cargo.args(["run", "--quiet", "-p", "vinequeue-benches", "--bin", bin]);
    if !cfg!(debug_assertions) {
        cargo.arg("--release");
    }
    let out = cargo.arg("--").args(args).output().expect("cargo runs");
    if !out.status.success() {
        return format!(
            "`{bin}` failed ({}):\n\n```text\n{}\n```\n",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut kept = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with('#') {
            skipping = line.trim_start_matches('#').trim() == "Machine and run";
        }
        // (Its title: the section this page puts it under says what it is.)
        if skipping || line.starts_with("# ") {
            continue;
        }
        if line.starts_with('#') {
            kept.push('#');
        }
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

fn plot_replay(path: &Path, replays: &[(u64, Measured)]) -> Result<(), Box<dyn std::error::Error>> {
    let line = |pick: fn(&Measured) -> &Vec<f64>| {
        replays
            .iter()
            .map(|(n, m)| (*n as f64 / 1e6, median(pick(m)) / 1e6))
            .collect()
    };
    plots::lines(
        path,
        "Replay: items/s against backlog size",
        &Axes {
            x: "backlog (million items)",
            y: "million items/s (median)",
            log_x: false,
            log_y: false,
            dots: true,
        },
        &[
            Series::new(
                "VineQueue: Queue::new until the sink has all",
                line(|m| &m.ours),
            ),
            Series::new("baseline: fs::read + postcard decode", line(|m| &m.base)),
        ],
    )
}

fn plot_durable(path: &Path, durable: &[Measured]) -> Result<(), Box<dyn std::error::Error>> {
    let per_round = |v: &[f64]| {
        v.iter()
            .enumerate()
            .map(|(i, r)| (i as f64 + 1.0, r / 1e6))
            .collect()
    };
    let mut series: Vec<Series> = durable
        .iter()
        .map(|m| Series::new(m.name.clone(), per_round(&m.ours)))
        .collect();
    if let Some(m) = durable.first() {
        series.push(Series::new(
            "baseline: encode + BufWriter + one fdatasync",
            per_round(&m.base),
        ));
    }
    plots::lines(
        path,
        "Durable delivery: items/s per round",
        &Axes {
            x: "round",
            y: "million items/s",
            log_x: false,
            log_y: false,
            dots: true,
        },
        &series,
    )
}

fn table(rows: &[&Measured], target: f64) -> String {
    let mut t = String::from(
        "| workload | VineQueue, M items/s (median) | min – max | baseline, M items/s | min – max | ratio | target |\n|---|---|---|---|---|---|---|\n",
    );
    for m in rows {
        let ratio = m.ratio();
        let verdict = if ratio >= target { "met" } else { "not met" };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {ratio:.2}x | {target:.1}x: {verdict} |\n",
            m.name,
            millions(median(&m.ours)),
            range(&m.ours),
            millions(median(&m.base)),
            range(&m.base),
        ));
    }
    t
}

fn parse() -> Plan {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("report") {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let mut size = Size::Full;
    let mut out = None;
    let mut siblings = true;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => size = Size::Quick,
            "--smoke" => size = Size::Smoke,
            "--no-peers" => siblings = false,
            "--out" => out = args.next().map(PathBuf::from),
            _ => {
                eprintln!("unknown argument {a}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let (rounds, durable_items, backlogs) = match size {
        Size::Full => (5, 1_000_000, vec![250_000, 500_000, 1_000_000, 2_000_000]),
        Size::Quick => (5, 200_000, vec![100_000, 200_000, 400_000]),
        Size::Smoke => (1, 20_000, vec![10_000, 20_000]),
    };
    let out = out.unwrap_or_else(|| match size {
        Size::Smoke => std::env::temp_dir().join("vinequeue-benchmarks-smoke.md"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md"),
    });
    Plan {
        size,
        rounds,
        durable_items,
        backlogs,
        out,
        siblings,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let plan = parse();
    let started = Instant::now();
    let scratch = tempfile::tempdir()?;
    let facts = machine_facts(&[(
        "scratch directory",
        std::env::temp_dir().display().to_string(),
    )]);
    let durable = durable(&plan, scratch.path());
    let from_async = durable_async(&plan, scratch.path());
    let replays = replay(&plan, scratch.path());
    let img = plan.out.parent().unwrap_or(Path::new(".")).join("img");
    std::fs::create_dir_all(&img)?;
    plot_durable(&img.join("durable-delivery.svg"), &durable)?;
    plot_replay(&img.join("replay-by-backlog.svg"), &replays)?;
    let data = scratch.path().join("plot-data");
    std::fs::create_dir_all(&data)?;

    let (memory, wal, asynchronous) = if plan.siblings {
        let (c, w, a): (&[&str], &[&str], &[&str]) = match plan.size {
            Size::Full => (&[], &[], &[]),
            Size::Quick => (
                &["--items", "400000", "--rounds", "3"],
                &[
                    "--rounds",
                    "1",
                    "--records",
                    "300000",
                    "--read-records",
                    "300000",
                    "--sync-secs",
                    "0.5",
                    "--queue-items",
                    "300000",
                    "--outage-items",
                    "500000",
                ],
                &["--items", "100000", "--rounds", "1"],
            ),
            Size::Smoke => (
                &["--items", "20000", "--rounds", "1", "--producers", "1"],
                &[
                    "--rounds",
                    "1",
                    "--records",
                    "20000",
                    "--read-records",
                    "20000",
                    "--sync-secs",
                    "0.1",
                    "--queue-items",
                    "20000",
                    "--outage-items",
                    "20000",
                    "--only",
                    "append,read,queue",
                ],
                &["--items", "20000", "--rounds", "1", "--producers", "1"],
            ),
        };
        (
            sibling("compare", c, &data),
            sibling("wal_compare", w, &data),
            sibling("async_compare", a, &data),
        )
    } else {
        let skipped = "(not run: `--no-peers`)\n".to_owned();
        (skipped.clone(), skipped.clone(), skipped)
    };

    // PostgresSink needs a server: `ci/with-services --only postgres` sets the variable.
    let postgres = if std::env::var_os("VINEQUEUE_TEST_POSTGRES_URL").is_some() && plan.siblings {
        let rows: &[&str] = match plan.size {
            Size::Full => &[],
            Size::Quick => &["--rounds", "3", "--rows", "100000"],
            Size::Smoke => &["--rounds", "1", "--rows", "5000"],
        };
        sibling("postgres_compare", rows, &data)
    } else {
        "(not run: no PostgreSQL server. Run the report through `ci/with-services --only \
         postgres` to include it.)\n"
            .to_owned()
    };

    let size = match plan.size {
        Size::Full => "",
        Size::Quick => " -- --quick",
        Size::Smoke => " -- --smoke",
    };
    let last = replays.last().map(|(_, m)| m);
    let mut page = String::new();
    page.push_str("# Benchmarks\n\n");
    page.push_str(&format!(
        "Written by `cargo run --release -p vinequeue-benches -- report{}` in {:.0} s; \
         every number below comes from that one run, VineQueue beside its baselines and \
         peers on the same machine at the same time. These machines are shared and noisy: \
         compare the ratios, not the absolute rates, between runs.\n\n",
        if size.is_empty() { "" } else { &size[3..] },
        started.elapsed().as_secs_f64()
    ));
    page.push_str(&facts);
    page.push_str("\n## End to end, durable\n\n");
    page.push_str(
        "What a user feels: one producer enqueues 60-byte strings into a queue with a \
         `wal_path` (`memory_size` 10,000, batches of 1,000, a sink that counts), timed \
         until the sink has the last one; and a backlog left in the log by a stopped \
         queue, timed from `Queue::new` until the sink has it all. Medians and min – max \
         over the rounds.\n\n",
    );
    page.push_str(&format!(
        "### Durable delivery ({} items, {} rounds)\n\n",
        plan.durable_items, plan.rounds
    ));
    page.push_str(
        "Baseline: the same items postcard-encoded with a length prefix into a 1 MiB \
         `BufWriter` over one file, then one `fdatasync`: writing them once, with no \
         queue, no checksums and no delivery.\n\n",
    );
    page.push_str(&table(&durable.iter().collect::<Vec<_>>(), 0.7));
    page.push_str("\n![durable delivery per round](img/durable-delivery.svg)\n\n");
    page.push_str(&format!(
        "### Durable delivery from an async producer ({} items, {} rounds)\n\n",
        plan.durable_items, plan.rounds
    ));
    page.push_str(
        "The same workload with an `AsyncQueue` (same configuration): one task awaits \
         `enqueue` for each item, the batches go to a counting `AsyncSink` on a \
         one-worker tokio runtime. Baseline: the blocking queue's durable delivery above, \
         measured again in each round beside it.\n\n",
    );
    page.push_str(
        &table(&[&from_async], 0.8)
            .replace("| baseline, M items/s |", "| blocking `Queue`, M items/s |"),
    );
    page.push('\n');
    page.push_str(&format!("### Replay ({} rounds per size)\n\n", plan.rounds));
    page.push_str(
        "Baseline: `fs::read` of a file holding the same records (length-prefixed \
         postcard) and the decoding of every item.\n\n",
    );
    page.push_str(&table(
        &replays.iter().map(|(_, m)| m).collect::<Vec<_>>(),
        0.8,
    ));
    page.push_str("\n![replay rate against backlog size](img/replay-by-backlog.svg)\n\n");
    page.push_str("## Memory mode against crossbeam-channel and flume\n\n");
    page.push_str(&memory);
    page.push_str(&sibling_plots::memory(&data, &img));
    page.push_str("\n## Durable mode: the log, the durable queue, the peers\n\n");
    page.push_str(&wal);
    page.push_str(&sibling_plots::wal(&data, &img));
    page.push_str("\n## The async adapter against tokio's mpsc\n\n");
    page.push_str(&asynchronous);
    page.push_str("\n## `PostgresSink` against a plain COPY\n\n");
    page.push_str(&postgres);
    page.push_str(
        "\n## How to reproduce\n\n\
         ```sh\n\
         ci/with-services --only postgres \\\n    cargo run --release -p vinequeue-benches -- report           # this page (a few minutes)\n\
         cargo run --release -p vinequeue-benches -- report --quick   # under three minutes\n\
         cargo run --release -p vinequeue-benches --bin compare       # one section alone\n\
         cargo run --release -p vinequeue-benches --bin wal_compare\n\
         cargo run --release -p vinequeue-benches --bin async_compare\n\
         ci/with-services --only postgres cargo run --release -p vinequeue-benches --bin postgres_compare\n\
         cargo bench -p vinequeue-benches                             # criterion\n\
         ```\n\n\
         The scratch directory is `$TMPDIR` (`/tmp` by default): point it at the disk you \
         care about.\n",
    );
    page.push_str("\n## Known limits\n\n");
    if let Some(m) = last {
        page.push_str(&format!(
            "- Replay of the largest backlog ran at {:.2}x its baseline (target 0.8x).\n",
            m.ratio()
        ));
    }
    for m in &durable {
        page.push_str(&format!(
            "- {} ran at {:.2}x its baseline (target 0.7x).\n",
            m.name.replacen("durable", "Durable", 1),
            m.ratio()
        ));
    }
    page.push_str(
        "- Two cores: the producer, the batcher thread, the log's write-ahead and sync \
         threads and the sink share them, so every end-to-end rate here is bounded by \
         what two cores can do with four busy threads; the baselines run on one.\n\
         - Where durable delivery's time goes (a profile of the producer thread, the \
         bottleneck: the batcher and the write-ahead thread keep up on the other core). \
         Making the items (formatting the strings) is about a fifth of its time, as in the \
         baseline. The rest is the queue's work per item: the checksum, the copy into the \
         mapped log (the next atomic instruction waits for its stores: first writes to \
         freshly mapped lines miss the cache), the ring, and the next item's allocation, \
         which costs more than in the baseline because the batcher's thread frees each item \
         (the allocator's slow path then serves every new one: about an eighth of the \
         producer's time). Tried, and measured without gain: handing the batcher no item (it \
         decodes the record from the log instead), prefetching the next frame's cache lines \
         for writing, one lock per `enqueue` instead of two (for a single producer), smaller \
         write-ahead chunks (slower). No change within this design that reaches 0.7x on two \
         cores is known.\n\
         - Where replay's time goes (profiles of the two threads that take part): first \
         `Queue::new` opens the log, reading every record and checking its checksum, about a \
         third of the replay; then the batcher thread reads each record again, checks it \
         again (a guarantee kept on purpose: damage that appears after the open is caught by \
         the read), decodes it into a new `String` and frees the batch's strings after the \
         sink, and the sink counts. The two run one after the other, each on one core: the \
         replay uses one of the two cores at a time, where the baseline's one pass reads and \
         decodes. Reaching 0.8x would take the open and the delivery overlapping (delivering \
         the first segments while the later ones are checked), a change of design not made \
         here. Allocating and freeing the strings is about a fifth of the batcher's time: \
         the baseline frees each string at once, and its allocator hands the same block \
         back; a batch of 1,000 held until the sink is done cannot.\n\
         - Memory during an outage: the log's pages leave the mapping a chunk behind the \
         writer, so what stays resident is the ring (`memory_size` items), the program, \
         and up to a few MiB of the segment being written (more as a new segment \
         starts: its first chunks are mapped in ahead); section e says whether the \
         peak stayed within the 8 MiB target.\n",
    );
    if plan.size != Size::Full {
        page.push_str(
            "- This page was written by a reduced run (`--quick` or `--smoke`): smaller \
             workloads, fewer rounds.\n",
        );
    }
    std::fs::write(&plan.out, page)?;
    eprintln!(
        "[report] wrote {} and {} in {:.0} s",
        plan.out.display(),
        img.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
