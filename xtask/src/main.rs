//! `cargo xtask`: the build steps plain `cargo` cannot express.
//!
//! Plug-ins are cdylibs that the host loads at run time, so building the workspace is not
//! enough: their `.so` files must be staged into the plugins directory the host scans
//! (`<target>/<profile>/plugins/`, beside the `kvs` binary, its default).
//!
//! * `cargo xtask build [--release]`: build everything, stage the plug-ins; the compat
//!   fixtures are built against each released plugin-api in `compat/releases/`
//!   (`compat.rs`).
//! * `cargo xtask run [ARGS...]`: release build, then `kvs --config config.toml ARGS...`.
//! * `cargo xtask test [ARGS...]`: install the Debian packages the tests need if any is
//!   missing (as root; otherwise say which), check that `vendor/extism` is exactly
//!   extism 1.30.0 plus `kvs.patch`, debug build, then `cargo test --workspace ARGS...`; without ARGS,
//!   then build the templates outside the tree against the packaged plugin-api and
//!   check them (`outside.rs`).
//! * `cargo xtask bench [writes|rest|resp|cluster|security|observability|memory|instructions|backup|overload]`: release build, then `kvs-bench`, which prints
//!   numbers side by side with Redis.
//! * `cargo xtask redis-compat [--frontend resp|wasm-resp] [--source DIR]`: Redis's own
//!   Tcl tests in external mode against a kvs it starts, per-file results
//!   (`redis_compat.rs`; not part of `test`: it downloads Redis's release tarball).
//! * `cargo xtask dist [--check]`: release build, then the Debian package
//!   `<target>/dist/kvs_VERSION_ARCH.deb` (`dist.rs`); `--check` (as root, CI) installs
//!   it on this machine, serves the book's curl session with it, and removes it again.
//! * `cargo xtask fuzz [TARGET] [--secs N]`: build `fuzz/` with `cargo +nightly fuzz`,
//!   run every target (or TARGET) for N seconds (default 30), print execs/s and
//!   coverage per target; fails on a crash (`fuzz.rs`, fuzz/README.md).
//! * `cargo xtask soak [--minutes N]`: debug build, then `kvs-bench soak`: mixed load on
//!   every kind of frontend for N minutes (default 1), printing kvs's memory, open files,
//!   threads and p99 per interval; fails if they grow (CI runs one minute).
//! * `cargo xtask cluster`: debug build, then a 3-member etcd cluster and 3 kvs nodes
//!   on it (the `etcd` logger) on loopback ports, until Ctrl-C (`cluster.rs`).

mod abi_guests;
mod cluster;
mod compat;
mod dist;
mod fuzz;
mod outside;
mod prerequisites;
mod redis_compat;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "build" => {
            let release = rest.iter().any(|a| a == "--release");
            build(release)?;
            Ok(())
        }
        "abi-guests" => {
            abi_guests::build()?;
            Ok(())
        }
        "run" => {
            let dir = build(true)?;
            let status = Command::new(dir.join("kvs"))
                .arg("--config")
                .arg(workspace_root().join("config.toml"))
                .args(&rest)
                .status()
                .context("cannot start kvs")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        "cluster" => {
            let dir = build(false)?;
            cluster::run(&dir)
        }
        "redis-compat" => {
            let dir = build(false)?;
            redis_compat::run(&dir, &rest)
        }
        "bench" => {
            let dir = build(true)?;
            let which = rest.first().map(String::as_str).unwrap_or("all");
            let modes: &[&str] = match which {
                "all" => &[
                    "writes",
                    "rest",
                    "resp",
                    "security",
                    "observability",
                    "memory",
                    "instructions",
                    "backup",
                    "overload",
                ],
                "writes" => &["writes"],
                "rest" => &["rest"],
                "resp" => &["resp"],
                "cluster" => &["cluster"],
                "security" => &["security"],
                "observability" => &["observability"],
                "memory" => &["memory"],
                "instructions" => &["instructions"],
                "backup" => &["backup"],
                "overload" => &["overload"],
                other => bail!(
                    "unknown benchmark {other:?}: writes, rest, resp, cluster, security, observability, memory, instructions, backup, overload or all"
                ),
            };
            for mode in modes {
                let status = Command::new(dir.join("kvs-bench"))
                    .arg(mode)
                    .env("RUST_LIB_BACKTRACE", "0")
                    .status()
                    .context("cannot start kvs-bench")?;
                if !status.success() {
                    bail!("kvs-bench {mode} failed");
                }
            }
            Ok(())
        }
        "dist" => dist::run(&rest),
        "fuzz" => fuzz::run(&rest),
        "soak" => {
            // A debug build (what the tests use): a soak watches growth, not speed.
            let dir = build(false)?;
            let status = Command::new(dir.join("kvs-bench"))
                .arg("soak")
                .args(&rest)
                .env("RUST_LIB_BACKTRACE", "0")
                .status()
                .context("cannot start kvs-bench")?;
            if !status.success() {
                bail!("the soak failed");
            }
            Ok(())
        }
        "test" => {
            prerequisites::ensure()?;
            verify_extism_fork()?;
            // The released contract first: a change to a frozen minor is named by its
            // snapshot test before anything that builds on it fails to compile.
            cargo(&["test", "-p", "kvs-plugin-api", "--test", "frozen"])
                .context("a released plugin-api minor changed (see the message above)")?;
            // The guest library's own tests (feature `guest`, which no workspace member
            // turns on: the WASM guests are a workspace of their own).
            cargo(&[
                "test",
                "-p",
                "kvs-plugin-api",
                "--features",
                "guest",
                "--lib",
                "guest::",
            ])?;
            let profile_dir = build(false)?;
            // The C and AssemblyScript guests (docs/wasm-abi.md) the tests load: test
            // fixtures, so `build` (the README's run command) does not need their
            // toolchains.
            abi_guests::build()?;
            cargo(
                &[
                    &["test", "--workspace"],
                    &rest.iter().map(String::as_str).collect::<Vec<_>>()[..],
                ]
                .concat(),
            )?;
            // Only for the whole suite, not a filtered run.
            if rest.is_empty() {
                outside::templates_outside_the_tree(&profile_dir)?;
            }
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 build [--release]  build the workspace and stage plug-ins beside kvs\n  \
                 run [ARGS...]      release build, then run kvs on config.toml with ARGS\n  \
                 abi-guests         build only the C and AssemblyScript guests (into <target>/wasm-abi)\n  \
                 test [ARGS...]     build, stage, cargo test --workspace ARGS (without ARGS, also\n                    \
                    the templates built outside the tree against the packaged plugin-api)\n  \
                 bench [writes|rest|resp|cluster|security|observability|memory|instructions|backup|overload]  release build, then the benchmarks (need redis, wrk, etcd)\n  \
                 dist [--check]     release build, then the Debian package in <target>/dist/ (--check,\n                    \
                    as root: install it here, use it, remove it)\n  \
                 fuzz [TARGET] [--secs N]  cargo +nightly fuzz: build fuzz/, run each target (or\n                    \
                    TARGET) N seconds (default 30), print execs/s and coverage\n  \
                 soak [--minutes N] debug build, then mixed load on every frontend for N minutes\n                    \
                    (default 1), resources per interval; fails if they grow\n  \
                 cluster            3 etcd members and 3 kvs nodes on them, on loopback, until Ctrl-C\n  \
                 redis-compat [--frontend resp|wasm-resp] [--source DIR]\n                    \
                    Redis's own tests (external mode) against kvs, per-file results"
            );
            if task.is_empty() || task == "help" || task == "--help" {
                Ok(())
            } else {
                bail!("unknown task {task:?}")
            }
        }
    }
}

fn workspace_root() -> PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time too. Prefer that to the value
    // baked in at compile time: with a target directory shared between clones, the
    // binary may have been built from another checkout.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

/// Runs cargo in another workspace (`wasm-plugins/`, the generated compat one in the
/// target directory), with the shared target directory.
fn cargo_in(workspace: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .with_context(|| format!("cannot run cargo in {}", workspace.display()))?;
    if !status.success() {
        bail!(
            "building {} failed: `cargo {}`",
            workspace.display(),
            args.join(" ")
        );
    }
    Ok(())
}

/// Builds the workspace and stages the shipped plug-ins (not the test fixtures) into
/// `<target>/<profile>/plugins/`. Returns `<target>/<profile>`.
fn build(release: bool) -> Result<PathBuf> {
    let mut args = vec!["build", "--workspace"];
    if release {
        args.push("--release");
    }
    cargo(&args)?;
    // The compatibility fixtures (compat/): plug-ins built against each released
    // plugin-api 1.x, native ones here and WASM ones in build_wasm.
    let compat = compat::prepare()?;
    compat.build_native(release)?;
    let profile_dir = target_dir().join(if release { "release" } else { "debug" });
    let plugins = profile_dir.join("plugins");
    std::fs::create_dir_all(&plugins)
        .with_context(|| format!("cannot create {}", plugins.display()))?;
    let mut staged = Vec::new();
    for entry in std::fs::read_dir(&profile_dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("libkvs_plugin_") && name.ends_with(".so") {
            let dest = plugins.join(name);
            // Copy to a temporary name and rename, so a running kvs never sees half a file.
            let tmp = plugins.join(format!(".{name}.tmp"));
            std::fs::copy(&path, &tmp)
                .and_then(|_| std::fs::rename(&tmp, &dest))
                .with_context(|| format!("cannot stage {}", path.display()))?;
            staged.push(name.to_string());
        }
    }
    for wasm in build_wasm(&compat)? {
        let name = wasm.file_name().unwrap().to_string_lossy().to_string();
        // Shipped WASM plug-ins only; fixtures and templates stay where the tests find them.
        if name.contains("fixture") || name.contains("template") || name.contains("compat") {
            continue;
        }
        let tmp = plugins.join(format!(".{name}.tmp"));
        std::fs::copy(&wasm, &tmp)
            .and_then(|_| std::fs::rename(&tmp, plugins.join(&name)))
            .with_context(|| format!("cannot stage {}", wasm.display()))?;
        staged.push(name);
    }
    staged.sort();
    eprintln!(
        "xtask: staged {} into {}",
        staged.join(", "),
        plugins.display()
    );
    Ok(profile_dir)
}

/// The WASM target the guests build for (WASI, so a logger can use its granted dir).
const WASM_TARGET: &str = "wasm32-wasip1";

/// Builds the `wasm-plugins/` workspace and the WASM compat fixtures (adding the target
/// with rustup if missing) and returns the `.wasm` files, fixtures included, in
/// `<target>/wasm32-wasip1/release/`.
fn build_wasm(compat: &compat::Workspace) -> Result<Vec<PathBuf>> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == WASM_TARGET)
        })
        .unwrap_or(false);
    if !installed {
        eprintln!("xtask: adding the {WASM_TARGET} target with rustup");
        let ok = Command::new("rustup")
            .args(["target", "add", WASM_TARGET])
            .status()?
            .success();
        if !ok {
            bail!("`rustup target add {WASM_TARGET}` failed");
        }
    }
    cargo_in(
        &workspace_root().join("wasm-plugins"),
        &["build", "--release", "--target", WASM_TARGET],
    )?;
    compat.build_wasm()?;
    let dir = target_dir().join(WASM_TARGET).join("release");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            out.push(path);
        }
    }
    Ok(out)
}

/// The published crate `vendor/extism` is made from, and its checksum in the crates.io
/// index (so a tampered download is refused, not compared).
const EXTISM_CRATE: &str = "https://static.crates.io/crates/extism/extism-1.30.0.crate";
const EXTISM_SHA256: &str = "4b66cd9ac5c64b49c9bac69db3d1b10d8f9386e7caab73489c2f197ba43d5e05";
/// Files of the published crate the fork leaves out (a C header and its build script,
/// which kvs does not build; the crate's own lock file), and files the fork adds.
const EXTISM_DROPPED: [&str; 3] = ["Cargo.lock", "build.rs", "extism.h"];
const EXTISM_ADDED: [&str; 2] = ["KVS-PATCH.md", "kvs.patch"];

/// Fails unless `vendor/extism` equals the published extism 1.30.0 with `kvs.patch`
/// applied, so the fork cannot drift from what KVS-PATCH.md describes. Uses curl, tar,
/// sha256sum and patch; the download is cached in the target directory.
fn verify_extism_fork() -> Result<()> {
    let vendor = workspace_root().join("vendor/extism");
    let cache = target_dir().join("xtask");
    std::fs::create_dir_all(&cache)?;
    let crate_file = cache.join("extism-1.30.0.crate");
    if !crate_file.is_file() {
        run_tool(
            Command::new("curl")
                .args(["-sSfL", "--retry", "3", "-o"])
                .arg(&crate_file)
                .arg(EXTISM_CRATE),
        )
        .context("downloading extism 1.30.0 to check vendor/extism")?;
    }
    let sum = Command::new("sha256sum").arg(&crate_file).output()?;
    if !String::from_utf8_lossy(&sum.stdout).starts_with(EXTISM_SHA256) {
        let _ = std::fs::remove_file(&crate_file);
        bail!(
            "{} does not match crates.io's checksum; deleted it, try again",
            crate_file.display()
        );
    }
    let work = cache.join("extism-check");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    run_tool(
        Command::new("tar")
            .arg("xzf")
            .arg(&crate_file)
            .arg("-C")
            .arg(&work),
    )?;
    let patched = work.join("extism-1.30.0");
    run_tool(
        Command::new("patch")
            .args(["-p1", "-s", "-i"])
            .arg(vendor.join("kvs.patch"))
            .current_dir(&patched),
    )
    .context("kvs.patch no longer applies to extism 1.30.0")?;
    let mut problems = Vec::new();
    compare_trees(&patched, &vendor, Path::new(""), &mut problems)?;
    if !problems.is_empty() {
        bail!(
            "vendor/extism is not extism 1.30.0 + vendor/extism/kvs.patch:\n  {}\n\
             Change the fork only through kvs.patch (regenerate it with `diff -ru` against \
             the published crate) and say why in KVS-PATCH.md.",
            problems.join("\n  ")
        );
    }
    eprintln!("xtask: vendor/extism is extism 1.30.0 + kvs.patch");
    Ok(())
}

fn run_tool(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed");
    }
    Ok(())
}

/// Records every difference between `expected/rel` and `actual/rel`, ignoring the
/// files the fork deliberately drops or adds (at its top level).
fn compare_trees(
    expected: &Path,
    actual: &Path,
    rel: &Path,
    problems: &mut Vec<String>,
) -> Result<()> {
    let names = |dir: &Path| -> Result<std::collections::BTreeSet<String>> {
        Ok(std::fs::read_dir(dir.join(rel))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?)
    };
    let (want, have) = (names(expected)?, names(actual)?);
    let top = rel.as_os_str().is_empty();
    for name in want.union(&have) {
        let path = rel.join(name);
        let (e, a) = (expected.join(&path), actual.join(&path));
        match (want.contains(name), have.contains(name)) {
            (true, false) if top && EXTISM_DROPPED.contains(&name.as_str()) => {}
            (false, true) if top && EXTISM_ADDED.contains(&name.as_str()) => {}
            (true, false) => problems.push(format!("missing: {}", path.display())),
            (false, true) => problems.push(format!("not in 1.30.0 + patch: {}", path.display())),
            _ if e.is_dir() && a.is_dir() => compare_trees(expected, actual, &path, problems)?,
            _ if std::fs::read(&e)? != std::fs::read(&a)? => {
                problems.push(format!("differs: {}", path.display()))
            }
            _ => {}
        }
    }
    Ok(())
}
