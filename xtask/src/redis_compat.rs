//! `cargo xtask redis-compat [--frontend resp|wasm-resp] [--source DIR]`: Redis's own Tcl
//! test suite, in external mode, against a kvs this task starts — one fresh kvs (empty
//! store) per test file — with pass/fail/skip counts per file, and every failure either
//! on the expected list below (which says why) or reported as unexpected.
//!
//! The tests come from the Redis release tarball matching the installed
//! `redis-server --version`, downloaded into `<target>/redis-compat/` and checked
//! against its sha256 in [`RELEASES`] (from Redis's own hashes list). `--source DIR` uses
//! an unpacked Redis source tree of the same version instead (for a machine without
//! network access to download.redis.io); its files are not checksummed.
//!
//! One change is made to the tests: external mode starts every server block with
//! `FLUSHALL` and `FUNCTION FLUSH`, which kvs does not serve (it never drops keys in
//! bulk); they are wrapped in `catch`, and a fresh kvs per file stands in for them.
//! Tests are run with `--singledb` (kvs has one database), `--durable` (an error in a
//! test is that test's failure, not the end of the run) and without the tags of tests
//! needing what an external server cannot offer (`needs:debug`, `needs:repl`, ...);
//! `external:skip` tests are skipped by Redis's runner itself.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Redis releases whose tests this task can fetch: version and the tarball's sha256
/// (from github.com/redis/redis-hashes). Add a line when Debian ships a newer Redis.
const RELEASES: &[(&str, &str)] = &[(
    "7.0.15",
    "98066f5363504b26c34dd20fbcc3c957990d764cdf42576c836fc021073f4341",
)];

/// The test files covering what kvs serves: strings, keyspace basics, the protocol
/// (inline, multibulk, RESP3), pipelining and QUIT, INFO.
const FILES: &[&str] = &[
    "unit/type/string",
    "unit/keyspace",
    "unit/protocol",
    "unit/quit",
    "unit/info-command",
];

/// Tags of tests that need what an external server does not offer.
const DENIED_TAGS: &str = "-needs:debug -needs:repl -needs:save -needs:reset \
    -needs:config-maxmemory -needs:config-resetstat -needs:latency -needs:local-process \
    -needs:pfdebug";

/// What a test file came to.
#[derive(Debug, Default)]
pub struct FileResult {
    pub passed: usize,
    pub expected_failures: Vec<(String, &'static str)>,
    pub unexpected_failures: Vec<String>,
    /// Tests Redis's runner skipped (tags, `external:skip`, `--singledb`).
    pub skipped: usize,
}

pub fn run(profile_dir: &Path, args: &[String]) -> Result<()> {
    let mut frontend = "resp".to_string();
    let mut source = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--frontend" => {
                frontend = it
                    .next()
                    .context("--frontend needs resp or wasm-resp")?
                    .clone()
            }
            "--source" => {
                source = Some(PathBuf::from(
                    it.next().context("--source needs a directory")?,
                ))
            }
            other => bail!(
                "unknown argument {other:?}: redis-compat [--frontend resp|wasm-resp] [--source DIR]"
            ),
        }
    }
    for (program, package) in [("tclsh", "tcl"), ("redis-server", "redis-server")] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            bail!("{program} is not installed: apt-get install {package}");
        }
    }
    let version = redis_version()?;
    let work = crate::target_dir().join("redis-compat");
    std::fs::create_dir_all(&work)?;
    let tree = match source {
        Some(dir) => prepare_copy(&dir, &work.join(format!("redis-{version}-local")))?,
        None => unpack_release(&version, &work)?,
    };
    patch_external_mode(&tree)?;
    let mut results = BTreeMap::new();
    for file in FILES {
        eprintln!("redis-compat: {file} against {frontend}");
        results.insert(*file, run_file(profile_dir, &frontend, &tree, &work, file)?);
    }
    print_summary(&version, &frontend, &results);
    let unexpected: usize = results.values().map(|r| r.unexpected_failures.len()).sum();
    if unexpected > 0 {
        bail!(
            "{unexpected} test(s) failed that the expected-failure list (xtask/src/redis_compat/expected.rs) does not explain"
        );
    }
    Ok(())
}

/// `7.0.15` from `Redis server v=7.0.15 sha=...`.
fn redis_version() -> Result<String> {
    let out = Command::new("redis-server")
        .arg("--version")
        .output()
        .context("cannot run redis-server --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .map(str::to_string)
        .with_context(|| format!("no version in `redis-server --version`: {text}"))
}

/// Downloads (once) and checks the release tarball, and unpacks its tests.
fn unpack_release(version: &str, work: &Path) -> Result<PathBuf> {
    let Some((_, want)) = RELEASES.iter().find(|(v, _)| *v == version) else {
        bail!(
            "the installed redis-server is {version}, whose tarball's sha256 xtask does not know: \
             add it to RELEASES in xtask/src/redis_compat.rs (from github.com/redis/redis-hashes)"
        );
    };
    let name = format!("redis-{version}.tar.gz");
    let tarball = work.join(&name);
    let url = format!("https://download.redis.io/releases/{name}");
    if !tarball.is_file() {
        let partial = work.join(format!("{name}.part"));
        let fetched = Command::new("curl")
            .args([
                "-fsSL",
                "--retry",
                "2",
                "--connect-timeout",
                "10",
                "--max-time",
                "300",
                "-o",
            ])
            .arg(&partial)
            .arg(&url)
            .status()
            .is_ok_and(|s| s.success());
        if !fetched {
            let _ = std::fs::remove_file(&partial);
            bail!(
                "could not download {url}: this machine looks offline (or cannot reach download.redis.io). \
                 Put the tarball at {} (it is checked against its sha256), or run \
                 `cargo xtask redis-compat --source DIR` with an unpacked Redis {version} source tree",
                tarball.display()
            );
        }
        std::fs::rename(&partial, &tarball)?;
    }
    let got = crate::compat::sha256(&tarball)?;
    if got != *want {
        bail!(
            "{} has sha256 {got}, not Redis's {want}: delete it and run again",
            tarball.display()
        );
    }
    let tree = work.join(format!("redis-{version}"));
    let _ = std::fs::remove_dir_all(&tree);
    let dir = format!("redis-{version}");
    crate::run_tool(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(work)
            .args([format!("{dir}/tests"), format!("{dir}/runtest")]),
    )?;
    Ok(tree)
}

/// A copy of a local source tree's tests (the original is not patched).
fn prepare_copy(source: &Path, tree: &Path) -> Result<PathBuf> {
    if !source.join("tests/test_helper.tcl").is_file() {
        bail!(
            "{} is not a Redis source tree (no tests/test_helper.tcl)",
            source.display()
        );
    }
    let _ = std::fs::remove_dir_all(tree);
    std::fs::create_dir_all(tree)?;
    crate::run_tool(
        Command::new("cp")
            .arg("-r")
            .arg(source.join("tests"))
            .arg(tree),
    )?;
    Ok(tree.to_path_buf())
}

/// Wraps external mode's `FLUSHALL` and `FUNCTION FLUSH` in `catch` (see the module docs).
fn patch_external_mode(tree: &Path) -> Result<()> {
    let path = tree.join("tests/support/server.tcl");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if text.contains("    catch {r flushall}\n") {
        return Ok(());
    }
    let patched = text.replacen(
        "    r flushall\n    r function flush\n",
        "    catch {r flushall}\n    catch {r function flush}\n",
        1,
    );
    if patched == text {
        bail!(
            "{} has no external-mode FLUSHALL to patch: this Redis version's runner differs",
            path.display()
        );
    }
    std::fs::write(&path, patched)?;
    Ok(())
}

/// Starts a fresh kvs, runs one test file against it, stops it.
fn run_file(
    profile_dir: &Path,
    frontend: &str,
    tree: &Path,
    work: &Path,
    file: &str,
) -> Result<FileResult> {
    let dir = tempfile::Builder::new().prefix("kvs-").tempdir_in(work)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "logger = \"file\"\nfrontends = [{frontend:?}]\nshutdown_timeout_ms = 5000\n\n\
             [plugins.file]\npath = {:?}\n\n[plugins.{frontend}]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().join("data/kvs.log")
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("kvs.out"))?;
    let kvs = Command::new(profile_dir.join("kvs"))
        .arg("--config")
        .arg(&config)
        .arg("--plugins-dir")
        .arg(profile_dir.join("plugins"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start kvs")?;
    let mut kvs = Stop(kvs);
    wait_for_pong(port, &mut kvs.0, &dir.path().join("kvs.out"))?;
    let out = Command::new("tclsh")
        .arg("tests/test_helper.tcl")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--singledb",
            "--durable",
            "--single",
            file,
            "--tags",
            DENIED_TAGS,
            "--timeout",
            "120",
        ])
        .current_dir(tree)
        .stdin(Stdio::null())
        .output()
        .context("cannot run tclsh")?;
    let text = String::from_utf8_lossy(&out.stdout);
    std::fs::write(dir.path().join("runtest.out"), text.as_bytes())?;
    drop(kvs);
    Ok(classify(file, &text))
}

/// Stops kvs when dropped.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_pong(port: u16, kvs: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = kvs.try_wait()? {
            bail!(
                "kvs exited ({status}) before serving:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "kvs did not answer PING on port {port} within 30 s; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// Sorts the runner's `[ok]`, `[err]`, `[ignore]`/`[skip]` lines.
fn classify(file: &str, output: &str) -> FileResult {
    let mut result = FileResult::default();
    for line in output.lines().map(strip_colours) {
        if let Some(rest) = line.strip_prefix("[ok]: ") {
            let _ = rest;
            result.passed += 1;
        } else if let Some(rest) = line.strip_prefix("[err]: ") {
            let name = rest
                .rsplit_once(" in tests/")
                .map_or(rest, |(n, _)| n)
                .to_string();
            match expected::why(file, &name) {
                Some(why) => result.expected_failures.push((name, why)),
                None => result.unexpected_failures.push(name),
            }
        } else if line.starts_with("[ignore]: ") || line.starts_with("[skip]: ") {
            result.skipped += 1;
        }
    }
    result
}

fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn print_summary(version: &str, frontend: &str, results: &BTreeMap<&str, FileResult>) {
    println!("\nRedis {version}'s tests against kvs ({frontend}), external mode:\n");
    println!("| file | passed | failed (expected) | failed (unexpected) | skipped |");
    println!("| --- | --- | --- | --- | --- |");
    for (file, r) in results {
        println!(
            "| {file} | {} | {} | {} | {} |",
            r.passed,
            r.expected_failures.len(),
            r.unexpected_failures.len(),
            r.skipped
        );
    }
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for r in results.values() {
        for (_, why) in &r.expected_failures {
            *reasons.entry(why).or_default() += 1;
        }
    }
    println!("\nexpected failures, by reason:");
    for (why, n) in reasons {
        println!("  {n:3}  {why}");
    }
    for (file, r) in results {
        for name in &r.unexpected_failures {
            println!("UNEXPECTED failure in {file}: {name}");
        }
    }
}

mod expected;
