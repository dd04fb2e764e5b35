//! The "Machine and run" table every comparison binary prints before its results, so
//! that each report says where and how its numbers were produced.

use std::process::Command;

/// Stdout of a command, trimmed, if it ran and succeeded.
pub fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Prints the table of [`machine_facts`].
pub fn print_machine_facts(extra: &[(&str, String)]) {
    print!("{}", machine_facts(extra));
}

/// The table: CPU, cores, kernel, rustc, the git commit (flagged when the tree has
/// uncommitted changes), the build, the load average, the date and the arguments, with
/// `extra` rows (fact, value) after the kernel's.
pub fn machine_facts(extra: &[(&str, String)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = command_line("uname", &["-r"]).unwrap_or_else(|| "?".into());
    let rustc = command_line("rustc", &["--version"]).unwrap_or_else(|| "?".into());
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let dirty = command_line("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    // The binary cannot tell `--release` from `--profile bench` (thin LTO): the report's
    // text says which.
    let build = if cfg!(debug_assertions) {
        "debug assertions ON: numbers are meaningless, build with --release"
    } else {
        "optimized (debug assertions off)"
    };
    let cmdline: Vec<String> = std::env::args().skip(1).collect();
    let arguments = if cmdline.is_empty() {
        "(defaults)".to_owned()
    } else {
        format!("`{}`", cmdline.join(" "))
    };

    let _ = writeln!(out, "## Machine and run\n");
    let _ = writeln!(out, "| fact | value |\n|---|---|");
    let _ = writeln!(
        out,
        "| CPU | {cpu} |\n| cores available | {cores} |\n| kernel | {kernel} |"
    );
    for (fact, value) in extra {
        let _ = writeln!(out, "| {fact} | {value} |");
    }
    let dirty = if dirty {
        " (with uncommitted changes)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "| rustc | {rustc} |\n| git commit | {commit}{dirty} |\n| build | {build} |"
    );
    let _ = writeln!(out, "| load average at start | {load} |\n| date | {date} |");
    let _ = writeln!(out, "| arguments | {arguments} |");
    out
}

/// A flag's value as a number (`_` separators allowed), or the message to show.
pub fn number(flag: &str, value: &str) -> Result<u64, String> {
    value
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{flag}: not a number: {value}"))
}

/// A flag's value as a comma-separated list of positive numbers, or the message to show.
pub fn positive_list(flag: &str, value: &str) -> Result<Vec<usize>, String> {
    value
        .split(',')
        .map(|p| match p.trim().replace('_', "").parse() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{flag}: not a list of positive numbers: {value}")),
        })
        .collect()
}

/// Prints `problem` and the usage line of binary `bin` to stderr and exits with status 2.
pub fn exit_with_usage(bin: &str, usage: &str, problem: &str) -> ! {
    eprintln!("{bin}: {problem}");
    eprintln!("{usage}");
    std::process::exit(2)
}
