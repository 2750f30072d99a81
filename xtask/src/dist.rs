//! `cargo xtask dist`: the Debian package, built with `dpkg-deb --build` from a tree
//! staged here, and `cargo xtask dist --check`, which installs it on this machine, uses
//! it and removes it again (CI, as root).
//!
//! Why `dpkg-deb` and not `cargo-deb`: every file of the package is made by this build —
//! the plug-ins of six crates and the WASM workspace, the man page and completions from
//! the `kvs` binary, the packaged config, the SDK `.crate` — so a tool that maps one
//! crate's artifacts to paths would still need all of this beforehand, and CI would build
//! and pin one more tool. `dpkg-deb` is part of dpkg, on every Debian machine, and the
//! layout is the one table in [`stage`].
//!
//! What the package holds (`PREFIX` = the staged root):
//!
//! | path | from |
//! |---|---|
//! | `/usr/bin/kvs` | the release binary, stripped |
//! | `/usr/lib/kvs/plugins/` | the staged plug-ins (`.so` stripped, `.wasm` as built) |
//! | `/etc/kvs/config.toml` | `config.toml` with absolute paths ([`packaged_config`]), a conffile |
//! | `/lib/systemd/system/kvs.service` | `dist/kvs.service` |
//! | `/usr/share/man/man1/kvs.1.gz` | `kvs man`, gzipped |
//! | `/usr/share/bash-completion/completions/kvs`, `/usr/share/zsh/vendor-completions/_kvs`, `/usr/share/fish/vendor_completions.d/kvs.fish` | `kvs completions SHELL` |
//! | `/usr/share/kvs/sdk/kvs-plugin-api-X.Y.Z.crate` | `cargo package -p kvs-plugin-api` |
//! | `/usr/share/doc/kvs/copyright` | the license |
//!
//! Binaries and plug-ins are stripped with `strip --strip-unneeded`: the release
//! profile's line tables and the symbol tables are dropped, not split off (a panic
//! message keeps its file and line; a backtrace loses its frames' names). The unit uses
//! `DynamicUser=`, so the package creates no user; its maintainer scripts only tell a
//! running systemd (`daemon-reload`, stop on removal, restart on upgrade) and do nothing
//! without one. Data under `/var/lib/kvs` is never removed by the package, not even on
//! purge.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{build, run_tool, target_dir, workspace_root};

/// Where the package puts things (also what `--check` looks for).
const BIN: &str = "usr/bin/kvs";
const PLUGINS: &str = "usr/lib/kvs/plugins";
const CONFIG: &str = "etc/kvs/config.toml";
const UNIT: &str = "lib/systemd/system/kvs.service";
const MAN: &str = "usr/share/man/man1/kvs.1.gz";
const SDK: &str = "usr/share/kvs/sdk";
const STATE: &str = "/var/lib/kvs";
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "usr/share/bash-completion/completions/kvs"),
    ("zsh", "usr/share/zsh/vendor-completions/_kvs"),
    ("fish", "usr/share/fish/vendor_completions.d/kvs.fish"),
];

/// `cargo xtask dist [--check]`.
pub fn run(args: &[String]) -> Result<()> {
    let check = match args {
        [] => false,
        [a] if a == "--check" => true,
        _ => bail!("usage: cargo xtask dist [--check]"),
    };
    if check {
        // Before building: refuse early rather than after minutes of compiling.
        preflight()?;
    }
    let started = Instant::now();
    let deb = dist()?;
    let size = std::fs::metadata(&deb)?.len();
    eprintln!(
        "xtask: built {} ({:.1} MiB) in {:.0} s",
        deb.display(),
        size as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );
    println!("{}", deb.display());
    if check {
        let started = Instant::now();
        install_check(&deb)?;
        eprintln!(
            "xtask: the package installs, serves, and removes cleanly ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Release build, stage the tree, `dpkg-deb --build`. Returns the `.deb`.
fn dist() -> Result<PathBuf> {
    let profile = build(true)?;
    let version = crate::outside::package_version(&workspace_root().join("host/Cargo.toml"))?;
    let arch = tool_output(Command::new("dpkg").arg("--print-architecture"))?;
    let out = target_dir().join("dist");
    let root = out.join(format!("kvs_{version}_{arch}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    stage(&profile, &root)?;
    control(&root, &version, &arch)?;
    fix_dir_modes(&root)?;
    let deb = out.join(format!("kvs_{version}_{arch}.deb"));
    run_tool(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "-z6", "--build"])
            .arg(&root)
            .arg(&deb)
            .stdout(Stdio::null()),
    )
    .context("dpkg-deb --build failed")?;
    Ok(deb)
}

/// Fills `root` with the package's files (the table in the module docs).
fn stage(profile: &Path, root: &Path) -> Result<()> {
    let kvs = profile.join("kvs");
    install_stripped(&kvs, &root.join(BIN), 0o755)?;

    let plugins = root.join(PLUGINS);
    let mut shipped = 0;
    for entry in std::fs::read_dir(profile.join("plugins"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("libkvs_plugin_") && name.ends_with(".so") {
            install_stripped(&path, &plugins.join(&name), 0o644)?;
        } else if name.starts_with("kvs_wasm_") && name.ends_with(".wasm") {
            install_file(&std::fs::read(&path)?, &plugins.join(&name), 0o644)?;
        } else {
            continue;
        }
        shipped += 1;
    }
    if shipped == 0 {
        bail!("no plug-ins in {}", profile.join("plugins").display());
    }

    let config = std::fs::read_to_string(workspace_root().join("config.toml"))?;
    install_file(
        packaged_config(&config)?.as_bytes(),
        &root.join(CONFIG),
        0o644,
    )?;

    let unit = std::fs::read_to_string(workspace_root().join("dist/kvs.service"))?;
    for path in ["/usr/bin/kvs", "/etc/kvs/config.toml", STATE] {
        if !unit.contains(path) {
            bail!("dist/kvs.service does not mention {path}, where the package puts it");
        }
    }
    install_file(unit.as_bytes(), &root.join(UNIT), 0o644)?;

    let page = Command::new(&kvs).arg("man").output()?;
    if !page.status.success() || page.stdout.is_empty() {
        bail!("`kvs man` failed");
    }
    install_file(&gzip(&page.stdout)?, &root.join(MAN), 0o644)?;
    for (shell, dest) in COMPLETIONS {
        let script = Command::new(&kvs).args(["completions", shell]).output()?;
        if !script.status.success() || script.stdout.is_empty() {
            bail!("`kvs completions {shell}` failed");
        }
        install_file(&script.stdout, &root.join(dest), 0o644)?;
    }

    let sdk = package_sdk()?;
    install_file(
        &std::fs::read(&sdk)?,
        &root.join(SDK).join(sdk.file_name().unwrap()),
        0o644,
    )?;

    install_file(
        COPYRIGHT.as_bytes(),
        &root.join("usr/share/doc/kvs/copyright"),
        0o644,
    )?;
    Ok(())
}

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: kvs

Files: *
License: MIT or Apache-2.0
";

/// `config.toml` as the package installs it: plug-ins from `/usr/lib/kvs/plugins`, data
/// under `/var/lib/kvs`, as absolute paths so kvs finds them from any working directory.
/// Each edit must match exactly once, so a change to `config.toml` that one of them no
/// longer fits fails here rather than shipping a config that writes somewhere else.
fn packaged_config(shipped: &str) -> Result<String> {
    const EDITS: [(&str, &str); 3] = [
        (
            "\n# plugins_dir = \"/usr/lib/kvs/plugins\"\n",
            "\nplugins_dir = \"/usr/lib/kvs/plugins\"\n",
        ),
        (
            "\npath = \"data/kvs.log\"\n",
            "\npath = \"/var/lib/kvs/kvs.log\"\n",
        ),
        (
            "\ndata_dir = \"data/wasm\" ",
            "\ndata_dir = \"/var/lib/kvs/wasm\" ",
        ),
    ];
    let mut text = String::from(
        "# /etc/kvs/config.toml, installed by the kvs package as a conffile: your changes\n\
         # are kept on upgrade. The systemd unit (kvs.service) runs kvs with it; data lives\n\
         # under /var/lib/kvs. `systemctl reload kvs` re-reads TLS certificates; other\n\
         # changes need `systemctl restart kvs`.\n#\n",
    );
    text.push_str(shipped);
    for (from, to) in EDITS {
        let n = text.matches(from).count();
        if n != 1 {
            bail!(
                "config.toml: expected {:?} once, found it {n} times; update xtask/src/dist.rs",
                from.trim()
            );
        }
        text = text.replacen(from, to, 1);
    }
    let parsed: toml::Table = toml::from_str(&text).context("the packaged config")?;
    // Every path kvs writes to is absolute (the relative ones in config.toml are comments).
    let relative = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find(|l| l.contains("\"data/"));
    if let Some(line) = relative {
        bail!("the packaged config still has a relative data path: {line}");
    }
    if parsed.get("plugins_dir").and_then(|v| v.as_str()) != Some("/usr/lib/kvs/plugins") {
        bail!("the packaged config's plugins_dir is not /usr/lib/kvs/plugins");
    }
    Ok(text)
}

/// `cargo package -p kvs-plugin-api`: the `.crate` plug-in authors build against.
fn package_sdk() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_tool(
        Command::new(&cargo)
            .args([
                "package",
                "-p",
                "kvs-plugin-api",
                "--no-verify",
                "--allow-dirty",
                "--quiet",
            ])
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", target_dir()),
    )?;
    let version = crate::outside::package_version(&workspace_root().join("plugin-api/Cargo.toml"))?;
    let file = target_dir()
        .join("package")
        .join(format!("kvs-plugin-api-{version}.crate"));
    if !file.is_file() {
        bail!("cargo package did not write {}", file.display());
    }
    Ok(file)
}

/// The `DEBIAN/` directory: control (dependencies read off the ELF files), conffiles,
/// maintainer scripts, md5sums.
fn control(root: &Path, version: &str, arch: &str) -> Result<()> {
    let debian = root.join("DEBIAN");
    let libc = glibc_needed(root)?;
    let control = format!(
        "Package: kvs\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: kvs developers <kvs@localhost>\n\
         Installed-Size: {size}\n\
         Depends: libc6 (>= {libc}), libgcc-s1\n\
         Section: database\n\
         Priority: optional\n\
         Description: durable key-value service with plug-in frontends and loggers\n \
         kvs keeps every key in memory and every write in a transaction log. Clients\n \
         reach it through frontends (REST, gRPC, Redis, WASM); writes become durable\n \
         through a logger (a file, PostgreSQL, etcd, WASM). Both are plug-ins, loaded\n \
         from /usr/lib/kvs/plugins. Includes the systemd unit kvs.service, the manual\n \
         page, shell completions and the plug-in SDK crate (/usr/share/kvs/sdk).\n",
        size = disk_usage_kib(root)?,
    );
    install_file(control.as_bytes(), &debian.join("control"), 0o644)?;
    install_file(
        format!("/{CONFIG}\n").as_bytes(),
        &debian.join("conffiles"),
        0o644,
    )?;
    install_file(POSTINST.as_bytes(), &debian.join("postinst"), 0o755)?;
    install_file(PRERM.as_bytes(), &debian.join("prerm"), 0o755)?;
    install_file(POSTRM.as_bytes(), &debian.join("postrm"), 0o755)?;
    let mut sums = String::new();
    for file in files_under(root)? {
        let rel = file.strip_prefix(root).unwrap();
        if rel.starts_with("DEBIAN") {
            continue;
        }
        let line = tool_output(Command::new("md5sum").arg(&file))?;
        let sum = line.split_whitespace().next().unwrap_or_default();
        sums += &format!("{sum}  {}\n", rel.display());
    }
    install_file(sums.as_bytes(), &debian.join("md5sums"), 0o644)
}

// The unit is not enabled or started by installing: `systemctl enable --now kvs`.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # An upgrade restarts a running kvs on the new binary.
    if [ -n "$2" ]; then
        systemctl try-restart kvs.service || true
    fi
fi
exit 0
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop kvs.service || true
fi
exit 0
"#;

// Data under /var/lib/kvs (with DynamicUser=, /var/lib/private/kvs) stays, even on
// purge: it is the user's database.
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -f /etc/systemd/system/multi-user.target.wants/kvs.service
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
"#;

/// The newest `GLIBC_x.y` symbol version any ELF file of the package needs; and a
/// failure if one links a library other than glibc's and libgcc_s (which `Depends`
/// names), so that line cannot go stale unnoticed.
fn glibc_needed(root: &Path) -> Result<String> {
    const KNOWN: [&str; 7] = [
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "ld-linux-x86-64.so.2",
        "libgcc_s.so.1",
    ];
    let mut newest = (2u32, 17u32);
    for file in files_under(root)? {
        if std::fs::read(&file)?.get(..4) != Some(b"\x7fELF") {
            continue;
        }
        let headers = tool_output(Command::new("objdump").arg("-p").arg(&file))?;
        for lib in headers
            .lines()
            .filter_map(|l| l.trim().strip_prefix("NEEDED"))
        {
            let lib = lib.trim();
            if !KNOWN.contains(&lib) {
                bail!(
                    "{} links {lib}: add its Debian package to Depends in xtask/src/dist.rs",
                    file.display()
                );
            }
        }
        let symbols = tool_output(Command::new("objdump").arg("-T").arg(&file))?;
        for v in symbols.split("GLIBC_").skip(1) {
            let v: String = v
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            newest = newest.max(version);
        }
    }
    Ok(format!("{}.{}", newest.0, newest.1))
}

fn disk_usage_kib(root: &Path) -> Result<u64> {
    let mut total = 0;
    for file in files_under(root)? {
        total += std::fs::metadata(&file)?.len().div_ceil(1024);
    }
    Ok(total)
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `bytes` to `dest` with `mode`, creating its directories ([`fix_dir_modes`]
/// sets their modes afterwards).
fn install_file(bytes: &[u8], dest: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dest.parent().unwrap())?;
    std::fs::write(dest, bytes).with_context(|| format!("cannot write {}", dest.display()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Every directory of the package 0755 whatever the umask was: kvs refuses plug-ins
/// that others could change, and every user reads the man page.
fn fix_dir_modes(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            fix_dir_modes(&path)?;
        }
    }
    Ok(())
}

fn install_stripped(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    install_file(&std::fs::read(src)?, dest, mode)?;
    run_tool(Command::new("strip").arg("--strip-unneeded").arg(dest))
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    // -n: no name or time stamp, so the same page gives the same bytes.
    let mut child = Command::new("gzip")
        .args(["-9n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer.join().unwrap()?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

fn tool_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// ---------------------------------------------------------------------------------------
// `--check`: install, use, remove.

/// The check changes this machine's packages, so it runs only as root and only where kvs
/// is not installed and has left nothing behind: afterwards the machine is as it was.
fn preflight() -> Result<()> {
    if tool_output(Command::new("id").arg("-u"))? != "0" {
        bail!("`cargo xtask dist --check` installs the package: run it as root");
    }
    if package_installed()? {
        bail!("the kvs package is installed on this machine; the check would replace it");
    }
    for path in ["/etc/kvs", STATE, "/var/lib/private/kvs", "/usr/lib/kvs"] {
        if std::fs::symlink_metadata(path).is_ok() {
            bail!("{path} exists; the check would use it and then remove it");
        }
    }
    Ok(())
}

fn package_installed() -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", "kvs"])
        .output()?;
    let status = String::from_utf8_lossy(&out.stdout);
    Ok(out.status.success() && !status.trim().is_empty() && status.trim() != "not-installed")
}

/// Undoes whatever the check did, on success and on failure alike (`Drop`): stops the
/// kvs it started, purges the package, removes the data it wrote.
struct Cleanup {
    kvs: Option<std::process::Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.kvs.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if package_installed().unwrap_or(true) {
            let _ = bounded(Command::new("dpkg").args(["--purge", "kvs"]), 120);
        }
        // preflight saw none of these; the package never removes data, the check does.
        let _ = std::fs::remove_dir_all(STATE);
        let _ = std::fs::remove_dir_all("/etc/kvs");
    }
}

fn install_check(deb: &Path) -> Result<()> {
    let mut cleanup = Cleanup { kvs: None };
    step("dpkg -i", || {
        bounded(Command::new("dpkg").arg("-i").arg(deb), 120).map(drop)
    })?;
    step("the installed files", || {
        let listed = bounded(Command::new("dpkg").args(["-L", "kvs"]), 30)?;
        let mut want: Vec<String> = [BIN, CONFIG, UNIT, MAN]
            .iter()
            .chain(COMPLETIONS.iter().map(|(_, p)| p))
            .map(|p| format!("/{p}"))
            .collect();
        want.push(format!("/{PLUGINS}/libkvs_plugin_rest.so"));
        want.push(format!("/{PLUGINS}/libkvs_plugin_file.so"));
        for path in &want {
            if !listed.lines().any(|l| l == path) || !Path::new(path).is_file() {
                bail!("{path} is not installed");
            }
        }
        // Now that /usr/bin/kvs exists, the unit verifies as installed.
        bounded(
            Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(format!("/{UNIT}")),
            60,
        )
        .map(drop)
    })?;

    // The packaged config listens on fixed ports (rest 8080, admin 9090) and kvs has no
    // flag for a plug-in's address, so the check moves the two `listen` lines of the
    // installed conffile to free ports; purging removes it, edited or not.
    let (rest, admin) = free_ports()?;
    step("free ports in /etc/kvs/config.toml", || {
        let path = format!("/{CONFIG}");
        let text = std::fs::read_to_string(&path)?;
        let edited = replace_once(
            &text,
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{rest}\""),
        )?;
        let edited = replace_once(
            &edited,
            "listen = \"127.0.0.1:9090\"",
            &format!("listen = \"127.0.0.1:{admin}\""),
        )?;
        std::fs::write(&path, edited)?;
        Ok(())
    })?;

    let log = target_dir().join("dist/check-kvs.log");
    step("kvs serves from /", || {
        let stderr = std::fs::File::create(&log)?;
        let child = Command::new("/usr/bin/kvs")
            .args(["--config", "/etc/kvs/config.toml"])
            .current_dir("/")
            .env_remove("KVS_CONFIG")
            .env_remove("KVS_PLUGINS_DIR")
            .env_remove("KVS_LOGGER")
            .env_remove("KVS_FRONTENDS")
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr)
            .spawn()
            .context("cannot start /usr/bin/kvs")?;
        cleanup.kvs = Some(child);
        let base = format!("http://127.0.0.1:{rest}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = cleanup.kvs.as_mut().unwrap().try_wait()? {
                bail!("kvs exited ({status}) before serving:\n{}", read_log(&log));
            }
            if curl(&["-o", "/dev/null", &format!("{base}/readyz")])?.0 == 200 {
                break;
            }
            if Instant::now() > deadline {
                bail!("kvs not ready within 60 s:\n{}", read_log(&log));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The book's session.
        let key = format!("{base}/v1/key/key-a");
        let value = "Hello, key-value store!";
        expect(curl(&["-X", "PUT", "-d", value, &key])?, 201, None)?;
        expect(curl(&[&key])?, 200, Some(value))?;
        expect(curl(&["-X", "DELETE", &key])?, 200, None)?;
        expect(curl(&[&key])?, 404, None)?;
        if !Path::new(STATE).join("kvs.log").is_file() {
            bail!("no transaction log in {STATE}");
        }
        // SIGTERM: a clean stop, exit 0. (Cleanup kills it if this fails.)
        let pid = cleanup.kvs.as_ref().unwrap().id().to_string();
        bounded(Command::new("kill").args(["-TERM", &pid]), 5)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = cleanup.kvs.as_mut().unwrap().try_wait()? {
                cleanup.kvs = None;
                break status;
            }
            if Instant::now() > deadline {
                bail!("kvs did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !status.success() {
            bail!("kvs stopped with {status}:\n{}", read_log(&log));
        }
        Ok(())
    })?;

    step("kvs plugins list", || {
        let out = bounded(
            Command::new("/usr/bin/kvs")
                .args(["--config", "/etc/kvs/config.toml", "plugins", "list"])
                .current_dir("/"),
            60,
        )?;
        print!("{out}");
        if !out.starts_with(&format!("plugins in /{PLUGINS} ")) || out.contains("refused:") {
            bail!("not the bundled plug-ins from /{PLUGINS}");
        }
        for name in ["file", "rest", "grpc", "resp", "postgres", "etcd"] {
            let so = format!("/{PLUGINS}/libkvs_plugin_{name}.so");
            if !out.lines().any(|l| l.ends_with(&so)) {
                bail!("{so} is not listed");
            }
        }
        for name in ["wasm-log", "wasm-rest", "wasm-resp"] {
            if !out
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name))
            {
                bail!("{name} is not listed");
            }
        }
        // The SDK is the contract version this kvs speaks.
        let speaks = out
            .split("speaks plugin-api ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .context("no plugin-api version in the listing")?;
        let sdk: Vec<String> = std::fs::read_dir(format!("/{SDK}"))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        if sdk.len() != 1 || !sdk[0].starts_with(&format!("kvs-plugin-api-{speaks}.")) {
            bail!("/{SDK} holds {sdk:?}, not kvs-plugin-api {speaks}");
        }
        Ok(())
    })?;

    step("man kvs, bash completion", || {
        let page = bounded(
            Command::new("sh")
                .args(["-c", "man -P cat kvs | head -n 12"])
                .env("MANWIDTH", "80"),
            30,
        )?;
        print!("{page}");
        if !page.contains("NAME") || !page.contains("kvs") {
            bail!("`man kvs` did not render the page");
        }
        bounded(
            Command::new("bash").args([
                "-c",
                "source /usr/share/bash-completion/completions/kvs && complete -p kvs",
            ]),
            30,
        )
        .map(drop)
    })?;

    step("dpkg -r: data and conffile kept", || {
        bounded(Command::new("dpkg").args(["--remove", "kvs"]), 120)?;
        for gone in [format!("/{BIN}"), format!("/{PLUGINS}"), format!("/{UNIT}")] {
            if Path::new(&gone).exists() {
                bail!("{gone} is still there after dpkg -r");
            }
        }
        for kept in [format!("/{CONFIG}"), format!("{STATE}/kvs.log")] {
            if !Path::new(&kept).is_file() {
                bail!("{kept} is gone after dpkg -r");
            }
        }
        Ok(())
    })?;

    step("dpkg -P: conffile gone", || {
        bounded(Command::new("dpkg").args(["--purge", "kvs"]), 120)?;
        if Path::new("/etc/kvs").exists() || package_installed()? {
            bail!("/etc/kvs or the package's record is still there after dpkg -P");
        }
        if !Path::new(STATE).join("kvs.log").is_file() {
            bail!("dpkg -P removed the data in {STATE}");
        }
        Ok(())
    })?;
    drop(cleanup);
    for path in [
        "/etc/kvs",
        STATE,
        "/usr/lib/kvs",
        "/usr/bin/kvs",
        "/usr/share/kvs",
    ] {
        if Path::new(path).exists() {
            bail!("{path} is left behind");
        }
    }
    Ok(())
}

/// Runs one named step of the check, saying which failed.
fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    f().with_context(|| format!("dist --check: {name}"))?;
    eprintln!(
        "xtask: dist --check: {name}: ok ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `cmd` under coreutils' `timeout`; fails on a non-zero exit. Returns stdout.
fn bounded(cmd: &mut Command, secs: u64) -> Result<String> {
    let mut timed = Command::new("timeout");
    timed
        .args(["-k", "5", &secs.to_string()])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let out = timed
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// curl with a 5 s limit: (status, body).
fn curl(args: &[&str]) -> Result<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .context("cannot run curl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

fn expect(got: (u16, String), status: u16, body: Option<&str>) -> Result<()> {
    if got.0 != status || body.is_some_and(|b| b != got.1) {
        bail!("expected {status} {body:?}, got {} {:?}", got.0, got.1);
    }
    Ok(())
}

/// Two free loopback ports (both bound at once, so they differ).
fn free_ports() -> Result<(u16, u16)> {
    let a = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

fn replace_once(text: &str, from: &str, to: &str) -> Result<String> {
    if text.matches(from).count() != 1 {
        bail!("expected {from:?} once in the packaged config");
    }
    Ok(text.replacen(from, to, 1))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_config_has_absolute_paths() {
        let shipped = std::fs::read_to_string(workspace_root().join("config.toml")).unwrap();
        let text = packaged_config(&shipped).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let plugins = table["plugins"].as_table().unwrap();
        assert_eq!(
            plugins["file"]["path"].as_str(),
            Some("/var/lib/kvs/kvs.log")
        );
        assert_eq!(
            plugins["wasm-log"]["data_dir"].as_str(),
            Some("/var/lib/kvs/wasm")
        );
        // The check moves these two to free ports.
        assert_eq!(plugins["rest"]["listen"].as_str(), Some("127.0.0.1:8080"));
        assert_eq!(table["admin"]["listen"].as_str(), Some("127.0.0.1:9090"));
        assert!(packaged_config("logger = \"file\"\n").is_err());
    }
}
