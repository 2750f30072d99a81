//! The compatibility fixtures: plug-ins built against every released plugin-api 1.x.
//!
//! `compat/releases/` holds each released minor as the `.crate` file `cargo package`
//! made, and `releases.toml`, the one list naming them (minor, file, sha256, the
//! fixtures' features). For every release this module checks the file's sha256, unpacks
//! it into `<target>/compat/kvs-plugin-api-X.Y.Z/`, and generates there a workspace with
//! one crate per fixture kind (native/WASM logger/frontend) whose `[lib] path` is the
//! committed source in `compat/fixtures/` and whose `kvs-plugin-api` is the unpacked
//! crate. `compat/Cargo.lock` pins its dependencies. Native fixtures build for the host
//! into `<target>/<profile>/`, WASM ones into `<target>/wasm32-wasip1/release/`, as
//! `kvs_compat_{kind}_1_N` (declaring `compat-…-1-N`), where the host's tests find them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::{WASM_TARGET, cargo_in, run_tool, target_dir, workspace_root};

/// One released minor, a line of `compat/releases/releases.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    /// `1.N`, the contract version the crate's handshake declares.
    minor: String,
    /// The `.crate` file in `compat/releases/`.
    #[serde(rename = "crate")]
    crate_file: String,
    sha256: String,
    /// The fixtures' cargo features when built against this release.
    features: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseList {
    release: Vec<Release>,
}

impl Release {
    /// The crate's version, from its file name (`kvs-plugin-api-1.3.1.crate`: `1.3.1`).
    fn version(&self) -> &str {
        self.crate_file
            .strip_prefix("kvs-plugin-api-")
            .and_then(|v| v.strip_suffix(".crate"))
            .expect("checked by releases()")
    }

    /// `1-3`: how fixture packages and the names they declare end.
    fn suffix(&self) -> String {
        self.minor.replace('.', "-")
    }
}

/// The four fixtures, one source each in `compat/fixtures/`.
struct Fixture {
    /// `native-logger`: the package is `kvs-compat-native-logger-1-N`.
    kind: &'static str,
    source: &'static str,
    wasm: bool,
}

const FIXTURES: [Fixture; 4] = [
    Fixture {
        kind: "native-logger",
        source: "native_logger.rs",
        wasm: false,
    },
    Fixture {
        kind: "native-frontend",
        source: "native_frontend.rs",
        wasm: false,
    },
    Fixture {
        kind: "wasm-logger",
        source: "wasm_logger.rs",
        wasm: true,
    },
    Fixture {
        kind: "wasm-frontend",
        source: "wasm_frontend.rs",
        wasm: true,
    },
];

fn compat_dir() -> PathBuf {
    workspace_root().join("compat")
}

/// Reads `compat/releases/releases.toml` and checks that its entries are well formed.
fn releases() -> Result<Vec<Release>> {
    let path = compat_dir().join("releases/releases.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let list: ReleaseList =
        toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
    for (i, r) in list.release.iter().enumerate() {
        let version = r
            .crate_file
            .strip_prefix("kvs-plugin-api-")
            .and_then(|v| v.strip_suffix(".crate"));
        let fits = version.is_some_and(|v| {
            v.strip_prefix(&r.minor)
                .is_some_and(|patch| patch.starts_with('.'))
        });
        if !r.minor.starts_with("1.") || !fits {
            bail!(
                "{}: release {:?} with crate {:?}: expected minor \"1.N\" and crate \"kvs-plugin-api-1.N.P.crate\"",
                path.display(),
                r.minor,
                r.crate_file
            );
        }
        if list.release[..i].iter().any(|o| o.minor == r.minor) {
            bail!("{}: minor {} is listed twice", path.display(), r.minor);
        }
    }
    Ok(list.release)
}

/// The generated workspace in `<target>/compat/`, ready to build.
pub struct Workspace {
    dir: PathBuf,
    native: Vec<String>,
    wasm: Vec<String>,
}

/// Checks every released crate's sha256, unpacks it, and writes the fixtures'
/// workspace.
pub fn prepare() -> Result<Workspace> {
    let releases = releases()?;
    let dir = target_dir().join("compat");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Every feature any release uses, declared by every fixture crate so that the shared
    // sources' cfgs are known in each build.
    let mut all_features: Vec<&str> = releases
        .iter()
        .flat_map(|r| r.features.iter().map(String::as_str))
        .collect();
    all_features.sort_unstable();
    all_features.dedup();

    let (mut native, mut wasm, mut members, mut excluded) = (vec![], vec![], vec![], vec![]);
    for release in &releases {
        let api = unpack(release, &dir)?;
        excluded.push(api.clone());
        for fixture in &FIXTURES {
            let member = format!("{}-{}", fixture.kind, release.suffix());
            let package = format!("kvs-compat-{member}");
            write_if_changed(
                &dir.join(&member).join("Cargo.toml"),
                &fixture_manifest(fixture, release, &package, &api, &all_features),
            )?;
            members.push(member);
            if fixture.wasm {
                wasm.push(package);
            } else {
                native.push(package);
            }
        }
    }
    let list = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("    {},", toml_string(n)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    write_if_changed(
        &dir.join("Cargo.toml"),
        &format!(
            "# Generated by `cargo xtask build` (xtask/src/compat.rs) from\n\
             # compat/releases/releases.toml: edit those, not this.\n\
             [workspace]\nresolver = \"3\"\nmembers = [\n{}\n]\n\
             # The unpacked releases share a package name, so none can be a member.\n\
             exclude = [\n{}\n]\n",
            list(&members),
            list(&excluded)
        ),
    )?;
    let lock =
        std::fs::read(compat_dir().join("Cargo.lock")).context("cannot read compat/Cargo.lock")?;
    write_if_changed(&dir.join("Cargo.lock"), &String::from_utf8(lock)?)?;
    Ok(Workspace { dir, native, wasm })
}

impl Workspace {
    /// Builds the native fixtures for the host, into `<target>/<profile>/`.
    pub fn build_native(&self, release: bool) -> Result<()> {
        let mut args = vec!["build"];
        if release {
            args.push("--release");
        }
        self.build(args, &self.native)
    }

    /// Builds the WASM fixtures, into `<target>/wasm32-wasip1/release/`.
    pub fn build_wasm(&self) -> Result<()> {
        self.build(
            vec!["build", "--release", "--target", WASM_TARGET],
            &self.wasm,
        )
    }

    fn build<'a>(&self, mut args: Vec<&'a str>, packages: &'a [String]) -> Result<()> {
        for p in packages {
            args.extend(["-p", p]);
        }
        let result = cargo_in(&self.dir, &args);
        // Keep what cargo resolved: a new release adds its packages to the lock file.
        let (ours, theirs) = (self.dir.join("Cargo.lock"), compat_dir().join("Cargo.lock"));
        if let (Ok(new), Ok(old)) = (std::fs::read(&ours), std::fs::read(&theirs))
            && new != old
        {
            std::fs::write(&theirs, new)?;
            eprintln!("xtask: cargo updated compat/Cargo.lock; commit it");
        }
        result
    }
}

/// Checks `release`'s crate file against its sha256 and unpacks it into `dir` (once per
/// checksum). Returns the unpacked directory's name, `kvs-plugin-api-X.Y.Z`.
fn unpack(release: &Release, dir: &Path) -> Result<String> {
    let file = compat_dir().join("releases").join(&release.crate_file);
    if !file.is_file() {
        bail!(
            "{} is missing: compat/releases/releases.toml lists it for plugin-api {}",
            file.display(),
            release.minor
        );
    }
    let sum = sha256(&file)?;
    if !sum.eq_ignore_ascii_case(&release.sha256) {
        bail!(
            "{} has sha256 {sum}, but compat/releases/releases.toml says {}: refusing \
             it. A released crate never changes: restore the file (`git checkout \
             compat/releases/`); if you are adding this release, put its sha256 in the list",
            file.display(),
            release.sha256
        );
    }
    let name = format!("kvs-plugin-api-{}", release.version());
    let unpacked = dir.join(&name);
    let stamp = unpacked.join(".kvs-xtask-sha256");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == sum) {
        return Ok(name);
    }
    // Unpack beside it, then swap it in, so an interrupted unpack is never taken as done.
    let scratch = dir.join(format!(".unpack-{name}"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    // `m`: stamp the files now rather than with the package's times, so cargo rebuilds
    // whatever an earlier unpack of another file at this path built.
    run_tool(
        Command::new("tar")
            .arg("xzmf")
            .arg(&file)
            .arg("-C")
            .arg(&scratch),
    )
    .with_context(|| format!("cannot unpack {}", file.display()))?;
    if !scratch.join(&name).join("Cargo.toml").is_file() {
        bail!("{} does not hold {name}/Cargo.toml", file.display());
    }
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::rename(scratch.join(&name), &unpacked)?;
    std::fs::remove_dir_all(&scratch)?;
    std::fs::write(&stamp, &sum)?;
    Ok(name)
}

/// The lower-case hex sha256 of `file` (by `sha256sum`, as xtask's other checks).
pub(crate) fn sha256(file: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .context("cannot run sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", file.display());
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed nothing")
}

/// A fixture crate's manifest: the committed source, the unpacked release (`api`, a
/// sibling directory), this release's features on by default.
fn fixture_manifest(
    fixture: &Fixture,
    release: &Release,
    package: &str,
    api: &str,
    all_features: &[&str],
) -> String {
    let source = compat_dir().join("fixtures").join(fixture.source);
    let quoted = |names: &[String]| {
        names
            .iter()
            .map(|n| toml_string(n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let declared: String = all_features
        .iter()
        .map(|f| format!("{} = []\n", toml_key(f)))
        .collect();
    let api_path = toml_string(&format!("../{api}"));
    let dependency = if fixture.wasm {
        format!(
            "kvs-plugin-api = {{ path = {api_path}, default-features = false, features = [\"guest\"] }}"
        )
    } else {
        format!("kvs-plugin-api = {{ path = {api_path} }}")
    };
    format!(
        "# Generated by `cargo xtask build` (xtask/src/compat.rs): edit\n\
         # compat/releases/releases.toml or the fixture source instead.\n\
         [package]\nname = {}\nversion = \"0.1.0\"\n\
         description = {}\n\
         edition = \"2024\"\nrust-version = \"1.95\"\nlicense = \"MIT OR Apache-2.0\"\npublish = false\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\npath = {}\n\n\
         [features]\ndefault = [{}]\n{declared}\n\
         [dependencies]\n{dependency}\n",
        toml_string(package),
        toml_string(&format!(
            "Compatibility fixture: a {} built against plugin-api {} ({}).",
            fixture.kind.replace('-', " "),
            release.minor,
            release.crate_file
        )),
        toml_string(&source.to_string_lossy()),
        quoted(&release.features),
    )
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `s` as a TOML key: bare if it can be, else quoted.
fn toml_key(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { s.to_string() } else { toml_string(s) }
}

/// Writes `text` to `path` unless it already holds exactly that, so cargo sees no change.
fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
