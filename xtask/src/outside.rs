//! The promise that a plug-in needs the `kvs-plugin-api` crate alone, tested: package the
//! crate (`cargo package`), unpack the `.crate`, copy each template out of the tree with
//! a manifest that depends only on that unpacked crate (the dependency line the guide
//! gives), build it there, and run `kvs plugins check` on the result.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{run_tool, target_dir, workspace_root};

/// A template, where it lives in the tree, and the `--config` its check needs.
struct Template {
    dir: &'static str,
    wasm: bool,
    config: &'static str,
}

const TEMPLATES: [Template; 4] = [
    Template {
        dir: "templates/native-logger",
        wasm: false,
        config: "path = \"{tmp}/outside.log\"",
    },
    Template {
        dir: "templates/native-frontend",
        wasm: false,
        config: "listen = \"127.0.0.1:0\"",
    },
    Template {
        dir: "wasm-plugins/templates/logger",
        wasm: true,
        config: "",
    },
    Template {
        dir: "wasm-plugins/templates/frontend",
        wasm: true,
        config: "listen = \"127.0.0.1:0\"\nprefix = \"/v1/key/\"",
    },
];

/// The guide's dependency line (docs/writing-plugins.md), for a crate at `path`.
fn dependency_line(path: &Path, wasm: bool) -> String {
    if wasm {
        format!(
            "kvs-plugin-api = {{ path = {:?}, default-features = false, features = [\"guest\"] }}",
            path
        )
    } else {
        format!("kvs-plugin-api = {{ path = {path:?} }}")
    }
}

/// Packages plugin-api, builds every template outside the tree against it, and checks
/// each with `kvs` (from `profile_dir`).
pub fn templates_outside_the_tree(profile_dir: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = target_dir();
    run_tool(
        Command::new(&cargo)
            .args([
                "package",
                "-p",
                "kvs-plugin-api",
                "--no-verify",
                "--allow-dirty",
            ])
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", &target),
    )?;
    let version = package_version(&workspace_root().join("plugin-api/Cargo.toml"))?;
    let crate_file = target
        .join("package")
        .join(format!("kvs-plugin-api-{version}.crate"));
    let outside = target.join("outside-the-tree");
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::create_dir_all(&outside)?;
    // `m`: stamp the files now rather than with the package's times, or cargo would
    // take a previous build of the same version as fresh after the source changed.
    run_tool(
        Command::new("tar")
            .arg("xzmf")
            .arg(&crate_file)
            .arg("-C")
            .arg(&outside),
    )?;
    let api = outside.join(format!("kvs-plugin-api-{version}"));
    for template in &TEMPLATES {
        let built = build_outside(&cargo, &api, &outside, template)?;
        let status = Command::new(profile_dir.join("kvs"))
            .args(["plugins", "check"])
            .arg(&built)
            .args(["--config", template.config])
            .status()
            .context("cannot run kvs plugins check")?;
        if !status.success() {
            bail!(
                "{} built outside the tree against the packaged plugin-api fails `kvs plugins check`",
                template.dir
            );
        }
    }
    eprintln!(
        "xtask: the four templates build outside the tree against the packaged plugin-api and pass kvs plugins check"
    );
    Ok(())
}

pub(crate) fn package_version(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)?;
    text.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .map(|v| v.trim_end_matches('"').to_string())
        .with_context(|| format!("no version in {}", manifest.display()))
}

/// Copies a template to `outside/`, gives it a standalone manifest, builds it; returns
/// the built `.so` or `.wasm`.
fn build_outside(cargo: &str, api: &Path, outside: &Path, t: &Template) -> Result<PathBuf> {
    let source = workspace_root().join(t.dir);
    let name = t.dir.rsplit('/').next().unwrap();
    let dir = outside.join(if t.wasm {
        format!("wasm-{name}")
    } else {
        name.to_string()
    });
    copy_dir(&source, &dir)?;
    let original = std::fs::read_to_string(source.join("Cargo.toml"))?;
    let package = original
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_string())
        .context("template without a package name")?;
    // Its own dependencies, with the workspace's versions spelled out.
    let mut dependencies = vec![dependency_line(api, t.wasm)];
    let after = original.split("[dependencies]").nth(1).unwrap_or("");
    for line in after.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('[') {
            break;
        }
        match line {
            l if l.starts_with("kvs-plugin-api") => {}
            "serde.workspace = true" => {
                dependencies.push("serde = { version = \"1\", features = [\"derive\"] }".into())
            }
            "toml.workspace = true" => dependencies.push("toml = \"0.8\"".into()),
            l if l.contains("workspace = true") => bail!("{}: add a version for `{l}`", t.dir),
            l => dependencies.push(l.to_string()),
        }
    }
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = {package:?}\nversion = \"0.1.0\"\nedition = \"2024\"\n\
             rust-version = \"1.95\"\npublish = false\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\n{}\n\n# Standalone, not part of any workspace around it.\n[workspace]\n",
            dependencies.join("\n")
        ),
    )?;
    // The WASM templates' .cargo/config.toml selects wasm32-wasip1 by itself.
    run_tool(
        Command::new(cargo)
            .args(["build", "--release"])
            .current_dir(&dir)
            .env(
                "CARGO_TARGET_DIR",
                target_dir().join("outside-the-tree-build"),
            ),
    )?;
    let stem = package.replace('-', "_");
    let out = target_dir().join("outside-the-tree-build");
    let built = if t.wasm {
        out.join("wasm32-wasip1/release")
            .join(format!("{stem}.wasm"))
    } else {
        out.join("release").join(format!("lib{stem}.so"))
    };
    if !built.is_file() {
        bail!("{} built, but {} is missing", t.dir, built.display());
    }
    Ok(built)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &dest)?;
        } else {
            std::fs::copy(&path, &dest)?;
        }
    }
    Ok(())
}
