//! Durable mode against plain file I/O, measured in the same run: prints the markdown
//! report of docs/benchmarks.md ("Durable mode") to stdout, every round to stderr.
//!
//! ```text
//! cargo run --release -p vinequeue-benches --bin wal_compare -- [options]
//! ```
//!
//! The workloads are in `vinequeue_benches::wal`. `--help` lists the options.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use vinequeue::SyncMode;
use vinequeue_benches::wal::{self, Scratch, SyncRun, FRAME_LEN, RECORD_LEN};
use vinequeue_benches::{median, peers, plots};

struct Args {
    dir: PathBuf,
    rounds: usize,
    records: u64,
    read_records: u64,
    sync_secs: f64,
    queue_items: u64,
    outage_items: u64,
    only: Vec<String>,
    rss_child: bool,
}

const GROUPS: [&str; 6] = ["append", "immediate", "read", "queue", "outage", "peers"];

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\n\nusage: wal_compare [--dir D] [--rounds R] [--records N] \
         [--read-records N] [--sync-secs S] [--queue-items N] [--outage-items N] \
         [--only GROUP,...]\n\
         groups: {}\n\
         defaults: --dir $TMPDIR (/tmp) --rounds 3 --records 1000000 --read-records 1000000 \
         --sync-secs 2 --queue-items 2000000 --outage-items 10000000",
        GROUPS.join(",")
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        dir: std::env::temp_dir(),
        rounds: 3,
        records: 1_000_000,
        read_records: 1_000_000,
        sync_secs: 2.0,
        queue_items: 2_000_000,
        outage_items: 10_000_000,
        only: GROUPS.iter().map(|s| s.to_string()).collect(),
        rss_child: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            usage("wal_compare: the durable-mode report");
        }
        if flag == "--rss-child" {
            a.rss_child = true;
            continue;
        }
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = || vinequeue_benches::report::number(&flag, &value).unwrap_or_else(|e| usage(&e));
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(&value),
            "--rounds" => a.rounds = num().max(1) as usize,
            "--records" => a.records = num().max(1),
            "--read-records" => a.read_records = num().max(1),
            "--sync-secs" => {
                a.sync_secs = value
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--sync-secs: {value}")))
            }
            "--queue-items" => a.queue_items = num().max(1000) / 1000 * 1000,
            "--outage-items" => a.outage_items = num().max(1),
            "--only" => {
                a.only = value.split(',').map(str::to_owned).collect();
                if let Some(bad) = a.only.iter().find(|g| !GROUPS.contains(&g.as_str())) {
                    usage(&format!("unknown group {bad}"));
                }
            }
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    a
}

use vinequeue_benches::report::{command_line, print_machine_facts as print_machine_facts_table};

fn print_machine_facts(args: &Args) {
    let dir = args.dir.display().to_string();
    let fs = command_line("df", &["--output=fstype", &dir])
        .and_then(|s| s.lines().nth(1).map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "?".into());
    let dev = command_line("df", &["--output=source,avail", "-h", &dir])
        .and_then(|s| {
            s.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(", "))
        })
        .unwrap_or_else(|| "?".into());
    let mut extra = vec![("temp dir", format!("`{dir}`: {fs} on {dev} free"))];
    if fs == "tmpfs" || fs == "ramfs" {
        extra.push((
            "WARNING",
            "the temp dir is in memory: syncs cost nothing; use --dir on a disk".into(),
        ));
    }
    print_machine_facts_table(&extra);
    println!(
        "| records | {RECORD_LEN}-byte payloads, {FRAME_LEN} bytes framed; {} rounds |\n",
        args.rounds
    );
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.1} K/s", r / 1e3)
    }
}

fn ratio_cell(ratios: &[f64]) -> String {
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(0.0, f64::max);
    format!("**{:.2}x** ({lo:.2}–{hi:.2})", median(ratios))
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target {
        "met"
    } else {
        "MISSED"
    }
}

fn pct(samples: &mut [u64], p: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn us(ns: u64) -> String {
    if ns >= 10_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

/// Group a: raw appends, page cache only.
fn append(args: &Args) {
    let n = args.records;
    let modes = [
        ("Os", SyncMode::Os),
        (
            "Periodic(100ms)",
            SyncMode::Periodic(Duration::from_millis(100)),
        ),
    ];
    let mut wal_rates = vec![Vec::new(); modes.len()];
    let mut base_rates = Vec::new();
    let mut ratios = vec![Vec::new(); modes.len()];
    for round in 0..=args.rounds {
        let scratch = Scratch::new(&args.dir, "bufwriter");
        let b = rate(n, wal::buffered_write(&scratch.path().join("log"), n));
        drop(scratch);
        let mut w = Vec::new();
        for &(_, mode) in &modes {
            w.push(rate(n, wal::wal_append(&args.dir, mode, n)));
        }
        eprintln!(
            "append round {round}{}: bufwriter {} wal {:?}",
            if round == 0 { " (warm-up)" } else { "" },
            fmt_rate(b),
            w.iter().map(|&r| fmt_rate(r)).collect::<Vec<_>>()
        );
        if round == 0 {
            continue;
        }
        base_rates.push(b);
        for (i, r) in w.into_iter().enumerate() {
            wal_rates[i].push(r);
            ratios[i].push(r / b);
        }
    }
    println!("## a. Log append, page cache only (`Wal::append`, 1 thread)\n");
    println!(
        "{n} records of {RECORD_LEN} bytes per run; median of {} rounds; baseline \
         `BufWriter<File>::write_all` of the same {FRAME_LEN}-byte frames (CRC included) \
         plus one `flush`, run first in each round. Target ≥ 0.80x.\n",
        args.rounds
    );
    println!("| sync mode | vinequeue Wal | BufWriter<File> | ratio (min–max) | target 0.8x |");
    println!("|---|---:|---:|---:|---|");
    for (i, (name, _)) in modes.iter().enumerate() {
        println!(
            "| `{name}` | {} | {} | {} | {} |",
            fmt_rate(median(&wal_rates[i])),
            fmt_rate(median(&base_rates)),
            ratio_cell(&ratios[i]),
            verdict(median(&ratios[i]), 0.8)
        );
    }
    println!();
}

struct SyncRow {
    rates: Vec<f64>,
    samples: Vec<u64>,
}

impl SyncRow {
    fn new() -> SyncRow {
        SyncRow {
            rates: Vec::new(),
            samples: Vec::new(),
        }
    }
    fn add(&mut self, run: SyncRun) {
        self.rates.push(run.rate());
        self.samples.extend(run.latencies);
    }
    fn cells(&mut self) -> (String, String, String) {
        let r = fmt_rate(median(&self.rates));
        let p50 = us(pct(&mut self.samples, 50.0));
        let p99 = us(pct(&mut self.samples, 99.0));
        (r, p50, p99)
    }
}

/// Group b: `Immediate`, N appenders with `sync_through`, vs fdatasync baselines.
fn immediate(args: &Args) {
    let d = Duration::from_secs_f64(args.sync_secs);
    let threads = [1usize, 8, 64];
    let mut single = SyncRow::new();
    let mut wal_rows: Vec<SyncRow> = threads.iter().map(|_| SyncRow::new()).collect();
    let mut ideal_rows: Vec<SyncRow> = threads.iter().map(|_| SyncRow::new()).collect();
    let mut ratios = vec![Vec::new(); threads.len()];
    for round in 0..args.rounds {
        let s = wal::group_commit_baseline(&args.dir, 1, d);
        eprintln!(
            "immediate round {round}: 1 fdatasync/record {}",
            fmt_rate(s.rate())
        );
        single.add(s);
        for (i, &t) in threads.iter().enumerate() {
            let ideal = wal::group_commit_baseline(&args.dir, t, d);
            let w = wal::wal_immediate(&args.dir, t, d);
            eprintln!(
                "immediate round {round}: {t} appenders: wal {} ideal {}",
                fmt_rate(w.rate()),
                fmt_rate(ideal.rate())
            );
            ratios[i].push(w.rate() / ideal.rate());
            wal_rows[i].add(w);
            ideal_rows[i].add(ideal);
        }
    }
    println!("## b. Log under `SyncMode::Immediate`: N appenders, `append` + `sync_through`\n");
    println!(
        "Each appender thread loops `append` then `sync_through(seq)` for {} s per run; \
         {} rounds, rates are medians, latencies are percentiles of all records of all \
         rounds (append start to sync return). Baselines, one thread on a plain appending \
         `File`: one `write` + `sync_data` per record, and the ideal group commit: `write` \
         of N frames + one `sync_data`, where every record of the group waits for that \
         sync. Target ≥ 0.80x the ideal.\n",
        args.sync_secs, args.rounds
    );
    let (r, p50, p99) = single.cells();
    println!("Baseline, one `fdatasync` per record: {r}, p50 {p50}, p99 {p99}.\n");
    println!(
        "| appenders N | vinequeue Wal | p50 | p99 | ideal: N records / fdatasync | p50 | p99 | ratio (min–max) | target 0.8x |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let csv: Vec<String> = threads
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "{t},{},{}",
                median(&wal_rows[i].rates),
                median(&ideal_rows[i].rates)
            )
        })
        .collect();
    plots::emit("immediate", "appenders,wal,ideal", &csv);
    for (i, &t) in threads.iter().enumerate() {
        let (wr, w50, w99) = wal_rows[i].cells();
        let (ir, i50, i99) = ideal_rows[i].cells();
        println!(
            "| {t} | {wr} | {w50} | {w99} | {ir} | {i50} | {i99} | {} | {} |",
            ratio_cell(&ratios[i]),
            verdict(median(&ratios[i]), 0.8)
        );
    }
    println!();
}

/// Group c: recovery and read-back.
fn read(args: &Args) {
    let n = args.read_records;
    let scratch = Scratch::new(&args.dir, "readback");
    let logdir = scratch.path().join("wal");
    wal::wal_prepare(&logdir, n);
    let plain = scratch.path().join("plain");
    wal::buffered_write(&plain, n);
    let (mut wal_rates, mut open_ms, mut base_rates, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..=args.rounds {
        let (bn, bd) = wal::buffered_read(&plain);
        let (wn, opened, wd) = wal::wal_read_back(&logdir, 10_000);
        assert_eq!((bn, wn), (n, n), "read back everything");
        eprintln!(
            "read round {round}{}: wal {} (open {:?}) bufreader {}",
            if round == 0 { " (warm-up)" } else { "" },
            fmt_rate(rate(n, wd)),
            opened,
            fmt_rate(rate(n, bd))
        );
        if round == 0 {
            continue;
        }
        wal_rates.push(rate(n, wd));
        open_ms.push(opened.as_secs_f64() * 1e3);
        base_rates.push(rate(n, bd));
        ratios.push(rate(n, wd) / rate(n, bd));
    }
    println!("## c. Recovery and read-back (`Wal::open` + `Storage::read`)\n");
    println!(
        "A log of {n} records written under `Os` and synced, then (per round) opened again \
         — recovery scans and checks every frame — and read in full with `Storage::read` \
         in batches of 10 000; warm page cache. Timed from `Wal::open` to the last \
         record. Baseline: `BufReader<File>` (64 KiB) over the same frames, checking each \
         CRC. Target 10 M records/s. Median of {} rounds after a warm-up.\n",
        args.rounds
    );
    println!("| records | vinequeue open + read | of which open | BufReader + CRC | ratio (min–max) | target 10 M/s |");
    println!("|---:|---:|---:|---:|---:|---|");
    let r = median(&wal_rates);
    println!(
        "| {n} | {} | {:.0} ms | {} | {} | {} |\n",
        fmt_rate(r),
        median(&open_ms),
        fmt_rate(median(&base_rates)),
        ratio_cell(&ratios),
        if r >= 10e6 { "met" } else { "MISSED" }
    );
}

/// Group d: the durable queue end to end.
fn queue(args: &Args) {
    let n = args.queue_items;
    let periodic = SyncMode::Periodic(Duration::from_millis(100));
    let (mut q_rates, mut b_rates, mut ratios, mut lat) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut qs_rates, mut bs_rates, mut sratios) = (Vec::new(), Vec::new(), Vec::new());
    let sync_n = (n / 10).max(1000) / 1000 * 1000;
    for round in 0..=args.rounds {
        let scratch = Scratch::new(&args.dir, "bufwriter");
        let b = rate(n, wal::buffered_write(&scratch.path().join("log"), n));
        drop(scratch);
        let (qd, _) = wal::queue_enqueue(&args.dir, periodic, n, None, false);
        let q = rate(n, qd);
        let (_, samples) = wal::queue_enqueue(&args.dir, periodic, n, None, true);
        // Sync every 1000: the queue, and 1000 frames per fdatasync.
        let (qsd, _) = wal::queue_enqueue(&args.dir, periodic, sync_n, Some(1000), false);
        let qs = rate(sync_n, qsd);
        let bs = wal::group_commit_baseline(
            &args.dir,
            1000,
            Duration::from_secs_f64(qsd.as_secs_f64().clamp(0.5, 5.0)),
        )
        .rate();
        eprintln!(
            "queue round {round}{}: enqueue {} bufwriter {} | sync/1000: queue {} baseline {}",
            if round == 0 { " (warm-up)" } else { "" },
            fmt_rate(q),
            fmt_rate(b),
            fmt_rate(qs),
            fmt_rate(bs)
        );
        if round == 0 {
            continue;
        }
        q_rates.push(q);
        b_rates.push(b);
        ratios.push(q / b);
        let mut samples = samples;
        lat.push(pct(&mut samples, 99.0));
        qs_rates.push(qs);
        bs_rates.push(bs);
        sratios.push(qs / bs);
    }
    let d = Duration::from_secs_f64(args.sync_secs);
    let producers = [16usize, 64];
    let mut rows: Vec<(SyncRow, SyncRow, Vec<f64>)> = producers
        .iter()
        .map(|_| (SyncRow::new(), SyncRow::new(), Vec::new()))
        .collect();
    for round in 0..args.rounds {
        for (i, &p) in producers.iter().enumerate() {
            let ideal = wal::group_commit_baseline(&args.dir, p, d);
            let q = wal::queue_immediate(&args.dir, p, d);
            eprintln!(
                "queue immediate round {round}: {p} producers: queue {} ideal {}",
                fmt_rate(q.rate()),
                fmt_rate(ideal.rate())
            );
            rows[i].2.push(q.rate() / ideal.rate());
            rows[i].0.add(q);
            rows[i].1.add(ideal);
        }
    }
    println!("## d. Durable queue end to end (`Queue::new` with `wal_path`)\n");
    println!(
        "`Config::default().wal_path(tmp).memory_size(10_000).batch_size(1_000)`, a \
         `NullSink`, items of a `Copy` type that postcard encodes to exactly \
         {RECORD_LEN} bytes, one producer. Median of {} rounds after a warm-up. Timed \
         from the first `enqueue` to the last call returned.\n",
        args.rounds
    );
    println!("| workload | vinequeue | baseline | ratio (min–max) | target |");
    println!("|---|---:|---:|---:|---|");
    let q = median(&q_rates);
    let r = median(&ratios);
    println!(
        "| `Periodic(100ms)`, {n} × `enqueue` | {} (p99 `enqueue` {}) | {} (`BufWriter` of the frames) | {} | ≥ 0.5x: {}; ≥ 2.5 M/s: {} |",
        fmt_rate(q),
        us(median(&lat.iter().map(|&v| v as f64).collect::<Vec<_>>()) as u64),
        fmt_rate(median(&b_rates)),
        ratio_cell(&ratios),
        verdict(r, 0.5),
        if q >= 2.5e6 { "met" } else { "MISSED" }
    );
    println!(
        "| `Periodic(100ms)`, {sync_n} × (`enqueue` ×1000 + `queue.sync()`) | {} | {} (1000 frames per `fdatasync`) | {} | ≥ 0.5x: {} |",
        fmt_rate(median(&qs_rates)),
        fmt_rate(median(&bs_rates)),
        ratio_cell(&sratios),
        verdict(median(&sratios), 0.5)
    );
    println!();
    println!(
        "`SyncMode::Immediate`, N producer threads calling `enqueue` for {} s per run \
         (each call returns once its record is durable), {} rounds; baseline the ideal \
         group commit (N frames per `fdatasync`, one thread). Target ≥ 0.50x.\n",
        args.sync_secs, args.rounds
    );
    println!("| producers N | vinequeue | p50 | p99 | ideal: N records / fdatasync | p50 | p99 | ratio (min–max) | target 0.5x |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (i, &p) in producers.iter().enumerate() {
        let (qr, q50, q99) = rows[i].0.cells();
        let (ir, i50, i99) = rows[i].1.cells();
        println!(
            "| {p} | {qr} | {q50} | {q99} | {ir} | {i50} | {i99} | {} | {} |",
            ratio_cell(&rows[i].2),
            verdict(median(&rows[i].2), 0.5)
        );
    }
    println!();
}

/// Group e: memory during a sink outage, in a child process of its own.
fn outage(args: &Args) {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args([
            "--rss-child",
            "--dir",
            &args.dir.display().to_string(),
            "--outage-items",
            &args.outage_items.to_string(),
        ])
        .output()
        .expect("run the child");
    let text = String::from_utf8_lossy(&out.stdout);
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    println!("## e. Memory during a sink outage\n");
    println!(
        "A child process: durable queue (`Periodic(100ms)`, `memory_size(10_000)`, \
         `batch_size(1_000)`, `retry_limit(u32::MAX)`, backoff 1–10 ms, log limit 4 GiB) \
         whose sink always returns `SendError::retry`; one producer enqueues \
         {} items of 100 bytes (encoded). Peak RSS is `VmHWM` from `/proc/self/status` of \
         the child at the end; RssAnon and RssFile are sampled every 5 ms. Target: peak \
         at most 8 MiB.\n",
        args.outage_items
    );
    println!("{}", text.trim());
    println!();
}

fn outage_child(args: &Args) {
    let before = wal::rss_kib().unwrap_or(0);
    let (run, samples) =
        wal::with_rss_sampler(|| wal::sink_outage(&args.dir, args.outage_items, 4 << 30));
    let anon = samples.iter().map(|s| s.anon_kib).max().unwrap_or(0);
    let file = samples.iter().map(|s| s.file_kib).max().unwrap_or(0);
    let csv: Vec<String> = samples
        .iter()
        .map(|s| format!("{:.3},{},{}", s.secs, s.anon_kib, s.file_kib))
        .collect();
    plots::emit("outage-rss", "secs,anon_kib,file_kib", &csv);
    let peak = wal::peak_rss_kib().unwrap_or(0);
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "| items | enqueue rate | log on disk | sink calls (all failed) | RSS before | \
         peak RSS (VmHWM) | max RssAnon | max RssFile (mapped log, program text) | target 8 MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "| {} | {} | {:.0} MiB | {} | {:.1} MiB | **{:.1} MiB** | {:.1} MiB | {:.1} MiB | \
         {} |",
        run.items,
        fmt_rate(rate(run.items, run.elapsed)),
        run.wal_bytes as f64 / (1 << 20) as f64,
        run.sink_calls,
        mib(before),
        mib(peak),
        mib(anon),
        mib(file),
        if mib(peak) <= 8.0 { "met" } else { "MISSED" },
    );
}

/// Group f: peers, append + read-back and durable commits from 8 threads.
fn peers(args: &Args) {
    let n = args.records;
    let names = [
        "vinequeue `Wal` (`Os`)",
        "yaque",
        "queue-file (no sync per add)",
    ];
    let mut app = vec![Vec::new(); 3];
    let mut rd = vec![Vec::new(); 3];
    for round in 0..=args.rounds {
        let s = Scratch::new(&args.dir, "peers");
        let (w, y, q) = (
            s.path().join("wal"),
            s.path().join("yaque"),
            s.path().join("qf"),
        );
        let mut a = [0.0; 3];
        let mut r = [0.0; 3];
        for k in 0..3 {
            // Rotate the order from round to round.
            let c = (k + round) % 3;
            match c {
                0 => {
                    a[0] = rate(n, wal::wal_prepare(&w, n));
                    let (got, _, d) = wal::wal_read_back(&w, 10_000);
                    assert_eq!(got, n);
                    r[0] = rate(n, d);
                }
                1 => {
                    a[1] = rate(n, peers::yaque_append(&y, n));
                    let (got, d) = peers::yaque_read_back(&y);
                    assert_eq!(got, n);
                    r[1] = rate(n, d);
                }
                _ => {
                    a[2] = rate(n, peers::queue_file_append(&q, n));
                    let (got, d) = peers::queue_file_read_back(&q);
                    assert_eq!(got, n);
                    r[2] = rate(n, d);
                }
            }
        }
        eprintln!(
            "peers round {round}{}: append {:?} read {:?}",
            if round == 0 { " (warm-up)" } else { "" },
            a.map(fmt_rate),
            r.map(fmt_rate)
        );
        if round > 0 {
            for k in 0..3 {
                app[k].push(a[k]);
                rd[k].push(r[k]);
            }
        }
    }
    let d = Duration::from_secs_f64(args.sync_secs);
    // One thread, each record durable before the next: queue-file's default.
    let (mut one, mut qf, mut one_ratios) = (SyncRow::new(), SyncRow::new(), Vec::new());
    for round in 0..args.rounds {
        let q = peers::queue_file_synced(&args.dir, d);
        let w = wal::wal_immediate(&args.dir, 1, d);
        eprintln!(
            "peers round {round}: 1 thread durable: wal {} queue-file {}",
            fmt_rate(w.rate()),
            fmt_rate(q.rate())
        );
        one_ratios.push(w.rate() / q.rate());
        one.add(w);
        qf.add(q);
    }
    let (mut vq, mut ok, mut ratios) = (SyncRow::new(), SyncRow::new(), Vec::new());
    for round in 0..args.rounds {
        let o = peers::okaywal_commits(&args.dir, 8, d);
        let w = wal::wal_immediate(&args.dir, 8, d);
        eprintln!(
            "peers round {round}: 8 threads durable: wal {} okaywal {}",
            fmt_rate(w.rate()),
            fmt_rate(o.rate())
        );
        ratios.push(w.rate() / o.rate());
        vq.add(w);
        ok.add(o);
    }
    println!("## f. Peers\n");
    println!(
        "{n} records of {RECORD_LEN} bytes appended from one thread without syncs, then \
         opened again and read back in full; median of {} rounds after a warm-up, the \
         order rotating per round. Append times exclude opening; vinequeue's excludes \
         the `sync` after the last append (the others do not sync).\n",
        args.rounds
    );
    println!("| crate | append | read back (open + read) | vinequeue / it, append | vinequeue / it, read |");
    println!("|---|---:|---:|---:|---:|");
    for k in 0..3 {
        let ra: Vec<f64> = app[0].iter().zip(&app[k]).map(|(v, o)| v / o).collect();
        let rr: Vec<f64> = rd[0].iter().zip(&rd[k]).map(|(v, o)| v / o).collect();
        println!(
            "| {} | {} | {} | {} | {} |",
            names[k],
            fmt_rate(median(&app[k])),
            fmt_rate(median(&rd[k])),
            if k == 0 {
                "–".into()
            } else {
                ratio_cell(&ra)
            },
            if k == 0 {
                "–".into()
            } else {
                ratio_cell(&rr)
            }
        );
    }
    let (vr, v50, v99) = one.cells();
    let (qr, q50, q99) = qf.cells();
    println!(
        "\nThe peers in their default configurations: yaque flushes each `send` to the \
         operating system and never syncs (it has no durable mode; its row above is its \
         default), queue-file syncs each `add` (`sync_writes`, on by default: its most \
         durable mode, measured here; the row above turns it off). One thread, each \
         record durable before the next, for {} s, {} rounds: vinequeue `append` + \
         `sync_through` (`Immediate`) vs queue-file `add`.\n",
        args.sync_secs, args.rounds
    );
    println!("| crate | records/s | p50 | p99 | vinequeue / queue-file |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| vinequeue `Wal` | {vr} | {v50} | {v99} | {} |",
        ratio_cell(&one_ratios)
    );
    println!("| queue-file (sync per add) | {qr} | {q50} | {q99} | – |");
    let (vr, v50, v99) = vq.cells();
    let (or, o50, o99) = ok.cells();
    println!(
        "\nDurable commits from 8 threads for {} s, {} rounds: vinequeue `append` + \
         `sync_through` (`Immediate`) vs okaywal `begin_entry` + `write_chunk` + \
         `commit`.\n",
        args.sync_secs, args.rounds
    );
    println!("| crate | records/s | p50 | p99 | vinequeue / okaywal |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| vinequeue `Wal` | {vr} | {v50} | {v99} | {} |",
        ratio_cell(&ratios)
    );
    println!("| okaywal | {or} | {o50} | {o99} | – |\n");
}

fn main() {
    let args = parse_args();
    if args.rss_child {
        outage_child(&args);
        return;
    }
    println!("# VineQueue durable mode vs plain file I/O\n");
    print_machine_facts(&args);
    for g in &args.only {
        match g.as_str() {
            "append" => append(&args),
            "immediate" => immediate(&args),
            "read" => read(&args),
            "queue" => queue(&args),
            "outage" => outage(&args),
            "peers" => peers(&args),
            _ => unreachable!("checked in parse_args"),
        }
    }
}
