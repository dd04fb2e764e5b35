//! The plots of the sections the comparison binaries write: drawn from the numbers they
//! leave in the plot-data directory (`vinequeue_benches::plots::emit`), each returned
//! as the page's image line, or nothing when its binary did not run that workload.

use std::path::Path;

use vinequeue_benches::plots::{self, Axes, Series};

/// Draws `file` in `img` with `draw`; the page's image line if it worked.
fn image(
    img: &Path,
    file: &str,
    alt: &str,
    draw: impl FnOnce(&Path) -> Result<(), Box<dyn std::error::Error>>,
) -> String {
    match draw(&img.join(file)) {
        Ok(()) => format!("\n![{alt}](img/{file})\n"),
        Err(e) => {
            eprintln!("[report] {file} not drawn: {e}");
            String::new()
        }
    }
}

fn num(field: &str) -> f64 {
    field.trim().parse().unwrap_or(f64::NAN)
}

/// Memory mode: throughput by producer count and enqueue latency percentiles.
pub fn memory(data: &Path, img: &Path) -> String {
    let mut out = String::new();
    if let Some(rows) = plots::load(data, "throughput") {
        let names = ["vinequeue", "crossbeam-channel", "flume"];
        let series: Vec<Series> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let points = rows
                    .iter()
                    .map(|r| (num(&r[0]), num(&r[i + 1]) / 1e6))
                    .collect();
                Series::new(*name, points)
            })
            .collect();
        out.push_str(&image(
            img,
            "throughput-by-producers.svg",
            "memory mode: throughput by producer count",
            |p| {
                plots::lines(
                    p,
                    "Memory mode: items/s by producer count",
                    &Axes {
                        x: "producers",
                        y: "million items/s (median)",
                        log_x: false,
                        log_y: false,
                        dots: true,
                    },
                    &series,
                )
            },
        ));
    }
    if let Some(rows) = plots::load(data, "latency") {
        // One line per (producers, call) through p50, p99 and p99.9.
        let series: Vec<Series> = rows
            .iter()
            .map(|r| {
                let label = if r[0] == "-" {
                    r[1].clone()
                } else {
                    format!("{}, {} producer(s)", r[1], r[0])
                };
                let points = (0..3).map(|i| (i as f64 + 1.0, num(&r[i + 2]))).collect();
                Series::new(label, points)
            })
            .collect();
        out.push_str(&image(
            img,
            "enqueue-latency.svg",
            "enqueue latency percentiles",
            |p| {
                plots::lines(
                    p,
                    "Enqueue latency: p50 (1), p99 (2), p99.9 (3)",
                    &Axes {
                        x: "percentile: 1 = p50, 2 = p99, 3 = p99.9",
                        y: "nanoseconds (log)",
                        log_x: false,
                        log_y: true,
                        dots: true,
                    },
                    &series,
                )
            },
        ));
    }
    out
}

/// Durable mode: `Immediate` against the ideal group commit, and RSS during an outage.
pub fn wal(data: &Path, img: &Path) -> String {
    let mut out = String::new();
    if let Some(rows) = plots::load(data, "immediate") {
        let line = |col: usize| {
            rows.iter()
                .map(|r| (num(&r[0]), num(&r[col]) / 1e3))
                .collect()
        };
        let series = [
            Series::new("vinequeue Wal: append + sync_through", line(1)),
            Series::new("ideal group commit: N frames per fdatasync", line(2)),
        ];
        out.push_str(&image(
            img,
            "immediate-by-appenders.svg",
            "Immediate: records/s against the number of appenders",
            |p| {
                plots::lines(
                    p,
                    "SyncMode::Immediate: durable records/s by appenders",
                    &Axes {
                        x: "appender threads (log)",
                        y: "thousand records/s (median)",
                        log_x: true,
                        log_y: false,
                        dots: true,
                    },
                    &series,
                )
            },
        ));
    }
    if let Some(rows) = plots::load(data, "outage-rss") {
        let line = |col: usize| {
            rows.iter()
                .map(|r| (num(&r[0]), num(&r[col]) / 1024.0))
                .collect()
        };
        let series = [
            Series::new("RssAnon (heap, stacks)", line(1)),
            Series::new("RssFile (mapped log pages, program text)", line(2)),
        ];
        out.push_str(&image(
            img,
            "outage-rss.svg",
            "resident memory over time during a sink outage",
            |p| {
                plots::lines(
                    p,
                    "Resident memory during a sink outage",
                    &Axes {
                        x: "seconds since the first enqueue",
                        y: "MiB",
                        log_x: false,
                        log_y: false,
                        dots: false,
                    },
                    &series,
                )
            },
        ));
    }
    out
}
