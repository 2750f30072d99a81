//! `cargo xtask cluster`: a local cluster to try kvs's scale-out — a 3-member etcd
//! cluster and 3 kvs nodes (the `etcd` logger, REST frontends) on loopback ports. It
//! prints the URLs and runs until Ctrl-C; everything lives in a temporary directory.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kvs_testkit::etcd::EtcdCluster;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Kills the kvs nodes when the command ends (Ctrl-C reaches them too).
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run(profile_dir: &Path) -> Result<()> {
    let etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    let dir = tempfile::tempdir()?;
    let mut nodes = Nodes(Vec::new());
    let mut urls = Vec::new();
    for n in 1..=3 {
        let port = free_port()?;
        let config = dir.path().join(format!("node{n}.toml"));
        std::fs::write(
            &config,
            format!(
                "logger = \"etcd\"\nfrontends = [\"rest\"]\n[plugins.etcd]\n\
                 endpoints = {endpoints:?}\nprefix = \"kvs/\"\n\
                 [plugins.rest]\nlisten = \"127.0.0.1:{port}\"\n"
            ),
        )?;
        let child = Command::new(profile_dir.join("kvs"))
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .context("cannot start kvs")?;
        nodes.0.push(child);
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for url in &urls {
        let addr = url.trim_start_matches("http://");
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("kvs at {url} did not come up within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("etcd members: {}", endpoints.join(" "));
    for (n, url) in urls.iter().enumerate() {
        println!("kvs node{}:   {url}", n + 1);
    }
    println!(
        "try: curl -X PUT -d hello {}/v1/key/a && curl {}/v1/key/a",
        urls[0], urls[2]
    );
    println!("Ctrl-C stops everything.");
    loop {
        for child in &mut nodes.0 {
            if let Some(status) = child.try_wait()? {
                bail!("a kvs node exited: {status}");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
