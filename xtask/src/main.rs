//! `cargo xtask`: the build steps plain `cargo` cannot express.
//!
//! Plug-ins are cdylibs that the host loads at run time, so building the workspace is not
//! enough: their `.so` files must be staged into the plugins directory the host scans
//! (`<target>/<profile>/plugins/`, beside the `kvs` binary, its default).
//!
//! * `cargo xtask build [--release]`: build everything, stage the plug-ins.
//! * `cargo xtask run [ARGS...]`: release build, then `kvs --config config.toml ARGS...`.
//! * `cargo xtask test [ARGS...]`: debug build, then `cargo test --workspace ARGS...`.
//! * `cargo xtask bench [writes|rest]`: release build, then `kvs-bench`, which prints
//!   numbers side by side with Redis.

use std::path::PathBuf;
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
        "bench" => {
            let dir = build(true)?;
            let which = rest.first().map(String::as_str).unwrap_or("all");
            let modes: &[&str] = match which {
                "all" => &["writes", "rest"],
                "writes" => &["writes"],
                "rest" => &["rest"],
                other => bail!("unknown benchmark {other:?}: writes, rest or all"),
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
        "test" => {
            build(false)?;
            cargo(
                &[
                    &["test", "--workspace"],
                    &rest.iter().map(String::as_str).collect::<Vec<_>>()[..],
                ]
                .concat(),
            )
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 build [--release]  build the workspace and stage plug-ins beside kvs\n  \
                 run [ARGS...]      release build, then run kvs on config.toml with ARGS\n  \
                 test [ARGS...]     build, stage, then cargo test --workspace ARGS\n  \
                 bench [writes|rest]  release build, then the benchmarks (need redis, wrk)"
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

/// Runs cargo in another workspace of the repository (`compat`, `wasm-plugins`), with
/// the shared target directory.
fn cargo_in(workspace: &str, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root().join(workspace))
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .with_context(|| format!("cannot run cargo for {workspace}/"))?;
    if !status.success() {
        bail!("building {workspace}/ failed: `cargo {}`", args.join(" "));
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
    cargo_in(
        "compat",
        &[
            &["build"][..],
            if release { &["--release"][..] } else { &[][..] },
        ]
        .concat(),
    )?;
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
    for wasm in build_wasm()? {
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

/// Builds the `wasm-plugins/` workspace (adding the target with rustup if missing) and
/// returns the `.wasm` files, fixtures included, in `<target>/wasm32-wasip1/release/`.
fn build_wasm() -> Result<Vec<PathBuf>> {
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
        "wasm-plugins",
        &["build", "--release", "--target", WASM_TARGET],
    )?;
    let compat_wasm = [
        "kvs-compat-wasm-logger-1-0",
        "kvs-compat-wasm-logger-1-1",
        "kvs-compat-wasm-frontend-1-0",
        "kvs-compat-wasm-frontend-1-1",
    ];
    let mut args = vec!["build", "--release", "--target", WASM_TARGET];
    for p in compat_wasm {
        args.extend(["-p", p]);
    }
    cargo_in("compat", &args)?;
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
