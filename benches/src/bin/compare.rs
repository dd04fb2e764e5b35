//! Prints the markdown report behind `docs/benchmarks.md`: end-to-end throughput and
//! per-call enqueue latency of VineQueue (memory mode) against crossbeam-channel and flume.
//!
//! ```text
//! cargo run --release -p vinequeue-benches --bin compare
//! cargo run --release -p vinequeue-benches --bin compare -- --items 1000000 --rounds 3
//! ```
//!
//! Options (all optional): `--items N` items per throughput run (a multiple of 1000,
//! default 4 000 000), `--rounds R` throughput rounds (default 5), `--producers 1,2,4`,
//! `--latency-items N` enqueue calls timed per latency run (default 1 000 000, split among
//! the producers), `--latency-rounds R` (default 3), `--latency-producers 1,4`.
//!
//! Rounds interleave the contenders (and rotate which goes first), so that a noisy
//! neighbour hits all three alike; the tables report medians over the rounds. Progress
//! goes to stderr, the report to stdout.

use std::collections::HashMap;
use std::time::Instant;
use vinequeue_benches::{plots, report};

use vinequeue_benches::{
    is_whole_batches, median, timer_overhead, Contender, Percentiles, BATCH_SIZE, BLOCK_TIMEOUT,
    CAPACITY,
};

struct Args {
    items: u64,
    rounds: usize,
    producers: Vec<usize>,
    latency_items: u64,
    latency_rounds: usize,
    latency_producers: Vec<usize>,
}

const USAGE: &str = "usage: compare [--items N] [--rounds R] [--producers 1,2,4] \
                     [--latency-items N] [--latency-rounds R] [--latency-producers 1,4]";

fn usage(problem: &str) -> ! {
    report::exit_with_usage("compare", USAGE, problem)
}

fn parse_args() -> Args {
    let mut args = Args {
        items: 4_000_000,
        rounds: 5,
        producers: vec![1, 2, 4],
        latency_items: 1_000_000,
        latency_rounds: 3,
        latency_producers: vec![1, 4],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            println!(
                "defaults: --items 4000000 --rounds 5 --producers 1,2,4 \
                 --latency-items 1000000 --latency-rounds 3 --latency-producers 1,4"
            );
            std::process::exit(0);
        }
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || report::number(&flag, &value).unwrap_or_else(|e| usage(&e));
        let list = || report::positive_list(&flag, &value).unwrap_or_else(|e| usage(&e));
        match flag.as_str() {
            "--items" => args.items = number(),
            "--rounds" => args.rounds = number() as usize,
            "--producers" => args.producers = list(),
            "--latency-items" => args.latency_items = number(),
            "--latency-rounds" => args.latency_rounds = number() as usize,
            "--latency-producers" => args.latency_producers = list(),
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    if !is_whole_batches(args.items) {
        usage(&format!(
            "--items must be a positive multiple of {BATCH_SIZE}"
        ));
    }
    if args.rounds == 0 || args.latency_rounds == 0 {
        usage("rounds must be at least 1");
    }
    args
}

fn print_machine_facts(args: &Args) {
    report::print_machine_facts(&[]);
    println!(
        "| workload | u64 items; capacity {CAPACITY}; batches of {BATCH_SIZE}; \
         vinequeue `OverflowPolicy::Block({BLOCK_TIMEOUT:?})` |"
    );
    println!(
        "| throughput | {} items per run, {} rounds, producers {:?} |",
        args.items, args.rounds, args.producers
    );
    println!(
        "| latency | {} timed calls per run, {} rounds, producers {:?} |",
        args.latency_items, args.latency_rounds, args.latency_producers
    );
    println!();
}

/// The contenders in round `round`'s order: rotated, so none always runs first.
fn order(round: usize) -> impl Iterator<Item = Contender> {
    (0..Contender::ALL.len()).map(move |k| Contender::ALL[(k + round) % Contender::ALL.len()])
}

fn millions(rate: f64) -> String {
    format!("{:.2} M/s", rate / 1e6)
}

fn ratio_cell(ratios: &[f64]) -> String {
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("**{:.2}x** ({lo:.2}–{hi:.2})", median(ratios))
}

fn throughput(args: &Args) {
    // Warm-up: page in the code, the allocator and the thread machinery; not recorded.
    eprintln!("warm-up...");
    for c in Contender::ALL {
        for &p in &args.producers {
            c.throughput(100_000, p);
        }
    }

    let mut rates: HashMap<(usize, Contender), Vec<f64>> = HashMap::new();
    for round in 0..args.rounds {
        for &p in &args.producers {
            for c in order(round) {
                let started = Instant::now();
                let elapsed = c.throughput(args.items, p);
                let rate = args.items as f64 / elapsed.as_secs_f64();
                eprintln!(
                    "round {}/{} P={p} {:<17} {:>8.2} M items/s ({:.2?} wall)",
                    round + 1,
                    args.rounds,
                    c.name(),
                    rate / 1e6,
                    started.elapsed()
                );
                rates.entry((p, c)).or_default().push(rate);
            }
        }
    }

    println!("## Throughput, end to end\n");
    println!(
        "Median of {} rounds. The ratios are the median of the per-round ratios (each round \
         runs the three back to back), with the lowest and highest round in brackets; \
         above 1.00x means VineQueue moved more items per second.\n",
        args.rounds
    );
    println!(
        "| producers | vinequeue | crossbeam-channel | flume | vinequeue / crossbeam-channel | vinequeue / flume |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let csv: Vec<String> = args
        .producers
        .iter()
        .map(|p| {
            let m = |c| median(&rates[&(*p, c)]);
            let (vq, cb, fl) = (Contender::VineQueue, Contender::Crossbeam, Contender::Flume);
            format!("{p},{},{},{}", m(vq), m(cb), m(fl))
        })
        .collect();
    plots::emit("throughput", "producers,vinequeue,crossbeam,flume", &csv);
    for &p in &args.producers {
        let vq = &rates[&(p, Contender::VineQueue)];
        let cb = &rates[&(p, Contender::Crossbeam)];
        let fl = &rates[&(p, Contender::Flume)];
        let vs_cb: Vec<f64> = vq.iter().zip(cb).map(|(a, b)| a / b).collect();
        let vs_fl: Vec<f64> = vq.iter().zip(fl).map(|(a, b)| a / b).collect();
        println!(
            "| {p} | {} | {} | {} | {} | {} |",
            millions(median(vq)),
            millions(median(cb)),
            millions(median(fl)),
            ratio_cell(&vs_cb),
            ratio_cell(&vs_fl)
        );
    }
    println!();
}

fn latency(args: &Args) {
    let mut results: HashMap<(usize, Contender), Vec<Percentiles>> = HashMap::new();
    let mut timer = Vec::new();
    for round in 0..args.latency_rounds {
        timer.push(Percentiles::of(&mut timer_overhead(args.latency_items)));
        for &p in &args.latency_producers {
            let per_producer = (args.latency_items / p as u64).max(1);
            for c in order(round) {
                let mut samples = c.enqueue_latency(per_producer, p);
                let pct = Percentiles::of(&mut samples);
                eprintln!(
                    "latency round {}/{} P={p} {:<17} p50 {} p99 {} p99.9 {} max {} ns",
                    round + 1,
                    args.latency_rounds,
                    c.name(),
                    pct.p50,
                    pct.p99,
                    pct.p999,
                    pct.max
                );
                results.entry((p, c)).or_default().push(pct);
            }
        }
    }

    let csv = std::cell::RefCell::new(Vec::new());
    let row = |label: &str, what: &str, runs: &[Percentiles]| {
        let med = |f: fn(&Percentiles) -> u64| {
            median(&runs.iter().map(|r| f(r) as f64).collect::<Vec<_>>()).round() as u64
        };
        let plain = if label == "–" { "-" } else { label };
        csv.borrow_mut().push(format!(
            "{plain},{},{},{},{}",
            what.replace('`', ""),
            med(|r| r.p50),
            med(|r| r.p99),
            med(|r| r.p999)
        ));
        let max = runs.iter().map(|r| r.max).max().unwrap_or(0);
        let count: usize = runs.iter().map(|r| r.count).sum();
        let above: usize = runs.iter().map(|r| r.above_1us).sum();
        println!(
            "| {label} | {what} | {} | {} | {} | {max} | {:.3}% | {count} |",
            med(|r| r.p50),
            med(|r| r.p99),
            med(|r| r.p999),
            100.0 * above as f64 / count.max(1) as f64
        );
    };

    println!("## Enqueue latency\n");
    println!(
        "Every call timed with a pair of `Instant::now()` reads while the consumer keeps up \
         (producers enqueue flat out). Percentiles in nanoseconds: the median over {} \
         rounds of each round's percentile; max is the largest over all rounds; \"> 1 µs\" is \
         the share of all calls that took longer than 1 µs. The first row is the cost of \
         the timing alone.\n",
        args.latency_rounds
    );
    println!("| producers | call | p50 ns | p99 ns | p99.9 ns | max ns | > 1 µs | samples |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    row("–", "(empty timer pair)", &timer);
    for &p in &args.latency_producers {
        for c in Contender::ALL {
            let call = match c {
                Contender::VineQueue => "vinequeue `enqueue`",
                Contender::Crossbeam => "crossbeam-channel `send`",
                Contender::Flume => "flume `send`",
            };
            row(&p.to_string(), call, &results[&(p, c)]);
        }
    }
    plots::emit("latency", "producers,call,p50,p99,p999", &csv.into_inner());
    println!();
}

fn main() {
    let args = parse_args();
    println!("# VineQueue vs crossbeam-channel vs flume\n");
    print_machine_facts(&args);
    throughput(&args);
    latency(&args);
}
