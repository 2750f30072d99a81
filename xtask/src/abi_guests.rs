//! The non-Rust guests that prove docs/wasm-abi.md: `wasm-plugins/c` (a logger, clang
//! for wasm32-wasi with Debian's wasi-libc) and `wasm-plugins/assemblyscript` (an HTTP
//! frontend). `cargo xtask build` builds them into `<target>/wasm-abi/`, where
//! `host/tests/wasm_abi.rs` finds them; `cargo xtask abi-guests` builds them alone.
//! They are not staged as shipped plug-ins.
//!
//! The AssemblyScript compiler is the npm package `assemblyscript` at [`ASC_VERSION`],
//! installed once into `<target>/wasm-abi/node/` (never into the source tree).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{prerequisites, target_dir, workspace_root};

/// The AssemblyScript compiler version the guest is built with; also pinned in
/// `wasm-plugins/assemblyscript/package.json`.
const ASC_VERSION: &str = "0.28.20";

/// The C logger and the AssemblyScript frontend, as files in the output directory.
pub const C_LOGGER: &str = "kvs_c_logger.wasm";
pub const AS_FRONTEND: &str = "kvs_as_rest.wasm";

/// Builds both guests into `<target>/wasm-abi/` and returns that directory.
pub fn build() -> Result<PathBuf> {
    prerequisites::ensure_guest_toolchains()?;
    let out = target_dir().join("wasm-abi");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let guests = workspace_root().join("wasm-plugins");
    script(&guests.join("c/build.sh"), &[&out]).context("building the C guest")?;
    let node = install_asc(&out.join("node"))?;
    script(&guests.join("assemblyscript/build.sh"), &[&out, &node])
        .context("building the AssemblyScript guest")?;
    for file in [C_LOGGER, AS_FRONTEND] {
        if !out.join(file).is_file() {
            bail!("{} was not built", out.join(file).display());
        }
    }
    eprintln!(
        "xtask: built {C_LOGGER}, {AS_FRONTEND} into {}",
        out.display()
    );
    Ok(out)
}

fn script(path: &Path, args: &[&Path]) -> Result<()> {
    let status = Command::new("sh")
        .arg(path)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !status.success() {
        bail!("{} failed", path.display());
    }
    Ok(())
}

/// `assemblyscript@ASC_VERSION` under `prefix/node_modules`, installed with npm when it
/// is missing or another version. Returns `prefix`.
fn install_asc(prefix: &Path) -> Result<PathBuf> {
    let manifest = prefix.join("node_modules/assemblyscript/package.json");
    // npm writes the manifest with `"version": "X"` on a line of its own.
    let pinned = format!("\"version\": \"{ASC_VERSION}\"");
    if std::fs::read_to_string(&manifest).is_ok_and(|text| text.contains(&pinned)) {
        return Ok(prefix.to_path_buf());
    }
    std::fs::create_dir_all(prefix)?;
    // A package.json of its own, so npm installs here and not into a parent folder.
    std::fs::write(prefix.join("package.json"), "{\"private\": true}\n")?;
    eprintln!(
        "xtask: installing assemblyscript@{ASC_VERSION} into {} (npm)",
        prefix.display()
    );
    let package = format!("assemblyscript@{ASC_VERSION}");
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--save-exact",
            "--prefix",
        ])
        .arg(prefix)
        .arg(&package)
        .status()
        .context("cannot run npm")?;
    if !status.success() {
        bail!(
            "`npm install {package}` failed (offline? the AssemblyScript guest needs it once): \
             with a network, run `cargo xtask abi-guests` again; or copy a node_modules \
             holding {package} into {}",
            prefix.display()
        );
    }
    Ok(prefix.to_path_buf())
}
