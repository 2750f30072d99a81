//! A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl in a temporary directory, on
//! a free loopback port, run as the `postgres` user when the tests run as root
//! (PostgreSQL refuses to run as root). Stopped and deleted on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The password of the `kvs` role the server is created with.
pub const PASSWORD: &str = "kvs-test-secret";

/// A running (or stopped) throwaway cluster.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The TCP port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Whether it fsyncs (benchmarks) or not (tests, for speed).
    durable: bool,
}

fn find_bin() -> PathBuf {
    let complete = |d: &PathBuf| {
        ["initdb", "pg_ctl", "psql"]
            .iter()
            .all(|t| d.join(t).is_file())
    };
    let from_path = std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(complete));
    let from_debian = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| {
            let mut dirs: Vec<PathBuf> = versions
                .filter_map(|v| v.ok().map(|v| v.path().join("bin")))
                .collect();
            dirs.sort();
            dirs.into_iter().rev().find(complete)
        });
    // Debian keeps the server binaries off PATH, in /usr/lib/postgresql/VERSION/bin.
    from_debian.or(from_path).expect(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql \
         (.ci/run does this)",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

impl PgServer {
    /// initdb, start, create the `kvs` role (password [`PASSWORD`]) and database.
    /// `fsync = off`: for tests, where the server's own durability is not under test.
    pub fn start() -> PgServer {
        Self::start_with(false)
    }

    /// Like [`PgServer::start`] but with `fsync = on`, as benchmarks against a durable
    /// server need.
    pub fn start_durable() -> PgServer {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> PgServer {
        let bin = find_bin();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PgServer {
            dir,
            bin,
            port,
            durable,
        };
        if is_root() {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(server.dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.start_again();
        server.psql(&format!("CREATE ROLE kvs LOGIN PASSWORD '{PASSWORD}'"));
        server.psql("CREATE DATABASE kvs OWNER kvs");
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn socket_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let out = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .current_dir("/")
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={}",
            self.port,
            self.socket_dir(),
            if self.durable { "on" } else { "off" }
        );
        let log = Path::new(&self.socket_dir())
            .join("server.log")
            .display()
            .to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-o", &opts, "-w", "start"],
        );
    }

    /// `pg_ctl stop -m fast`: what an operator (or a failover) does to a live server.
    pub fn stop_fast(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Runs SQL as the superuser over the Unix socket, in the `postgres` database;
    /// returns psql's output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Like [`PgServer::psql`], in the `kvs` database.
    pub fn psql_kvs(&self, sql: &str) -> String {
        self.psql_in("kvs", sql)
    }

    fn psql_in(&self, database: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let socket_dir = self.socket_dir();
        let out = self.run(
            "psql",
            &[
                "-h",
                &socket_dir,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                database,
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The plug-in's connection URL (no password: that comes from the environment).
    pub fn url(&self) -> String {
        format!("postgres://kvs@127.0.0.1:{}/kvs", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}
