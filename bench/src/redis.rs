//! A throwaway `redis-server` and `redis-benchmark` runs, the peer kvs is measured against.

use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::{KillOnDrop, VALUE_BYTES, command_under, free_port, wait_for_port, which};

/// A throwaway redis-server with `appendfsync always`, the durable setting comparable to
/// kvs's `sync = "always"`.
pub(crate) struct Redis {
    server: KillOnDrop,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Redis {
    pub(crate) fn start() -> Result<Redis> {
        which("redis-benchmark")?;
        Redis::start_under(&[])
    }

    /// [`Redis::start`], with redis-server run by the command `wrapper` (e.g. valgrind)
    /// when it is not empty.
    pub(crate) fn start_under(wrapper: &[&str]) -> Result<Redis> {
        let dir = tempfile::tempdir()?;
        let (command, patience) = command_under(wrapper, "redis-server");
        let durable = ["--appendonly", "yes", "--appendfsync", "always"];
        let path = dir.path().to_path_buf();
        Redis::launch(command, patience, &path, &durable, dir)
    }

    /// A throwaway redis-server that keeps nothing on disk (no AOF, no RDB saves) and
    /// takes `DEBUG` commands (`POPULATE`, `RELOAD`): for memory and snapshot figures.
    /// `dir` is its working directory (where `DEBUG RELOAD` writes its RDB).
    pub(crate) fn start_in_memory(dir: &std::path::Path) -> Result<Redis> {
        which("redis-cli")?;
        let in_memory = ["--appendonly", "no", "--enable-debug-command", "yes"];
        let patience = std::time::Duration::from_secs(30);
        let command = Command::new("redis-server");
        Redis::launch(command, patience, dir, &in_memory, tempfile::tempdir()?)
    }

    /// Runs `command` (a redis-server) on a free loopback port, no RDB saves, working
    /// in `dir`, with `mode` arguments; `owned` is kept until it stops.
    fn launch(
        mut command: Command,
        patience: std::time::Duration,
        dir: &std::path::Path,
        mode: &[&str],
        owned: tempfile::TempDir,
    ) -> Result<Redis> {
        which("redis-server")?;
        let port = free_port()?;
        let port_text = port.to_string();
        let mut server = KillOnDrop(
            command
                .args(["--port", &port_text, "--bind", "127.0.0.1", "--save", ""])
                .args(mode)
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        wait_for_port(port, &mut server.0, patience)?;
        Ok(Redis {
            server,
            _dir: owned,
            port,
        })
    }

    /// `redis-cli ARGS` against it: what it printed.
    pub(crate) fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .context("redis-cli (Debian package redis-tools)")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The port it listens on (127.0.0.1).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Empties it (`FLUSHALL`), so a round starts from the keyspace the last one did.
    pub(crate) fn flush(&self) -> Result<()> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "FLUSHALL"])
            .output()
            .context("redis-cli (Debian package redis-tools)")?;
        anyhow::ensure!(out.status.success(), "FLUSHALL failed: {out:?}");
        Ok(())
    }

    /// The server's process id (for its CPU time).
    pub(crate) fn pid(&self) -> u32 {
        self.server.0.id()
    }

    /// `redis-benchmark -t OP -c CLIENTS`; requests per second.
    pub(crate) fn benchmark(&self, op: &str, clients: usize, requests: usize) -> Result<f64> {
        let out = Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-t",
                op,
                "-c",
                &clients.to_string(),
            ])
            .args([
                "-n",
                &requests.to_string(),
                "-d",
                &VALUE_BYTES.to_string(),
                "-r",
                "10000",
                "-q",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
        text.lines()
            .rev()
            .find(|l| l.contains("requests per second"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no rate in redis-benchmark output:\n{text}"))
    }
}
