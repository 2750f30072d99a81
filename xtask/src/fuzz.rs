//! `cargo xtask fuzz [TARGET] [--secs N]`: build the fuzz targets in `fuzz/` with
//! `cargo +nightly fuzz` (libFuzzer, AddressSanitizer), run each (or the named one) for
//! N seconds (default 30) on its corpus `fuzz/corpus/<target>/`, and print execs/s and
//! coverage per target from libFuzzer's final report. Fails if a target found a crash,
//! a hang or a leak, after showing what it was. See fuzz/README.md.
//!
//! `fuzz/` is a workspace of its own, built into `fuzz/target` (its own flags would
//! rebuild everything in the shared target directory); `KVS_FUZZ_TARGET_DIR` moves it,
//! e.g. out of a fresh CI clone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// Targets whose code under test logs warnings to stderr (the file logger's torn tails
/// and repairs, thousands a second): their stderr is closed while fuzzing
/// (`-close_fd_mask=2`; libFuzzer's own report still shows), and a crash is re-run
/// without it to show the panic.
const NOISY: &[&str] = &["file_scan", "file_damage"];

/// What libFuzzer's final report said about one run.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    runs: u64,
    execs_per_sec: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
}

/// Parses the `#N DONE cov: C ft: F corp: K/…` line and the `stat::` lines that
/// `-print_final_stats=1` adds. `None` if the run ended without them (a crash).
fn parse_stats(log: &str) -> Option<Stats> {
    let done = log
        .lines()
        .rev()
        .find(|l| l.split_whitespace().nth(1) == Some("DONE"))?;
    let field = |line: &str, name: &str| -> Option<u64> {
        let rest = line.split(name).nth(1)?.trim_start();
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    };
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(Stats {
        runs: stat("stat::number_of_executed_units:")
            .or_else(|| field(done, "#"))
            .unwrap_or(0),
        execs_per_sec: stat("stat::average_exec_per_sec:")
            .or_else(|| field(done, "exec/s:"))
            .unwrap_or(0),
        cov: field(done, "cov:")?,
        ft: field(done, "ft:")?,
        corpus: field(done, "corp:").unwrap_or(0),
    })
}

/// `cargo +nightly fuzz ...` in `fuzz/`, clear of the variables the outer `cargo xtask`
/// set (its `CARGO` is the stable toolchain's, which cannot build with sanitizers).
fn cargo_fuzz(fuzz_dir: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .arg("fuzz")
        .current_dir(fuzz_dir)
        .env("CARGO_TARGET_DIR", target_dir);
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn output(cmd: &mut Command, what: &str) -> Result<Output> {
    cmd.output().with_context(|| format!("cannot run {what}"))
}

pub fn run(args: &[String]) -> Result<()> {
    let mut secs: u64 = 30;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => {
                secs = it
                    .next()
                    .context("--secs needs a number")?
                    .parse()
                    .context("--secs needs a whole number of seconds")?;
            }
            s if s.starts_with('-') => bail!("unknown option {s:?}: fuzz [TARGET] [--secs N]"),
            s if only.is_none() => only = Some(s.to_string()),
            s => bail!("one target at a time (got {s:?} too)"),
        }
    }
    if secs == 0 {
        bail!("--secs must be at least 1");
    }

    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let target_dir = std::env::var_os("KVS_FUZZ_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| fuzz_dir.join("target"));

    let version = output(
        cargo_fuzz(&fuzz_dir, &target_dir).arg("--version"),
        "cargo fuzz",
    )?;
    if !version.status.success() {
        bail!(
            "`cargo +nightly fuzz` is missing: `rustup toolchain install nightly` and \
             `cargo +nightly install cargo-fuzz`\n{}",
            String::from_utf8_lossy(&version.stderr)
        );
    }
    let list = output(
        cargo_fuzz(&fuzz_dir, &target_dir).arg("list"),
        "cargo fuzz list",
    )?;
    if !list.status.success() {
        bail!("cargo fuzz list: {}", String::from_utf8_lossy(&list.stderr));
    }
    let all: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let targets = match only {
        Some(t) if all.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target {t:?}; there are: {}", all.join(", ")),
        None => all,
    };

    println!(
        "== fuzz: building {} target(s) with cargo +nightly fuzz",
        targets.len()
    );
    let started = Instant::now();
    let mut build = cargo_fuzz(&fuzz_dir, &target_dir);
    build.arg("build");
    if let [one] = &targets[..] {
        build.arg(one);
    }
    let status = build.status().context("cannot run cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed");
    }
    println!("== fuzz: built in {:.0?}", started.elapsed());

    let mut results = Vec::new();
    let mut failed = Vec::new();
    for target in &targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        println!("== fuzz: {target} for {secs} s");
        let mut cmd = cargo_fuzz(&fuzz_dir, &target_dir);
        cmd.args(["run", target.as_str()])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            // A single input running this long is a hang, not a slow input.
            .arg("-timeout=10")
            .arg("-print_final_stats=1");
        if NOISY.contains(&target.as_str()) {
            cmd.arg("-close_fd_mask=2");
        }
        let out = output(&mut cmd, "cargo fuzz run")?;
        let log = String::from_utf8_lossy(&out.stderr);
        match (out.status.success(), parse_stats(&log)) {
            (true, Some(stats)) => results.push((target.clone(), stats)),
            _ => {
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!(
                    "== fuzz: {target} FAILED; the end of its output:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
                if NOISY.contains(&target.as_str()) {
                    show_panic(&fuzz_dir, &target_dir, target, &log);
                }
                failed.push(target.clone());
            }
        }
    }

    println!(
        "\n{:<16} {:>12} {:>10} {:>7} {:>8} {:>7}",
        "target", "runs", "execs/s", "cov", "ft", "corpus"
    );
    for (target, s) in &results {
        println!(
            "{:<16} {:>12} {:>10} {:>7} {:>8} {:>7}",
            target, s.runs, s.execs_per_sec, s.cov, s.ft, s.corpus
        );
    }
    for target in &failed {
        println!(
            "{target:<16} FAILED (crash, hang or leak: see above; the input is in fuzz/artifacts/{target}/)"
        );
    }
    println!(
        "== fuzz: {secs} s per target, {:.0?} in all",
        started.elapsed()
    );
    if !failed.is_empty() {
        bail!("fuzzing found a problem in: {}", failed.join(", "));
    }
    Ok(())
}

/// Re-runs a crashing input with stderr open, so the panic message shows.
fn show_panic(fuzz_dir: &Path, target_dir: &Path, target: &str, log: &str) {
    let Some(artifact) = log
        .lines()
        .find_map(|l| l.split("Test unit written to ").nth(1))
        .map(str::trim)
    else {
        return;
    };
    eprintln!("== fuzz: re-running {artifact} with stderr open");
    let mut cmd = cargo_fuzz(fuzz_dir, target_dir);
    cmd.args(["run", target, artifact]);
    if let Ok(out) = cmd.output() {
        let err = String::from_utf8_lossy(&out.stderr);
        // Without the logger's warnings (`WARN ...`), which would bury the panic.
        let shown = err
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("warn "));
        for line in shown.take(40) {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzers_final_report() {
        let log = "\
#65536\tpulse  cov: 300 ft: 1000 corp: 200/5Kb exec/s: 21845 rss: 60Mb
#98286\tDONE   cov: 832 ft: 1845 corp: 245/9743b lim: 373 exec/s: 6142 rss: 86Mb
Done 98286 runs in 16 second(s)
stat::number_of_executed_units: 98286
stat::average_exec_per_sec:     6142
stat::new_units_added:          1043
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              86
";
        assert_eq!(
            parse_stats(log),
            Some(Stats {
                runs: 98286,
                execs_per_sec: 6142,
                cov: 832,
                ft: 1845,
                corpus: 245,
            })
        );
        assert_eq!(parse_stats("==1== ERROR: libFuzzer: deadly signal"), None);
    }
}
