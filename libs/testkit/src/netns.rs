//! A second host for cluster tests: a network namespace joined to this one by a veth
//! pair, and a partition between them made of nftables rules that silently drop
//! packets (as a cut link does: no reset, no error, connections just stop).
//!
//! Needs root (CI is). Everything it makes — the namespace, the veth pair, the
//! nftables table — is its own, named after the process and a counter, and removed on
//! drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace with one veth link to this one: `host_ip` here, `ns_ip` there.
pub struct NetNs {
    name: String,
    table: String,
    /// This side's address on the link.
    pub host_ip: String,
    /// The namespace's address on the link.
    pub ns_ip: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs an nftables script (`nft -f -`).
fn nft(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| format!("nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// Whether this process can make namespaces (root, with `ip` and `nft`).
    pub fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc_geteuid() } == 0;
        root && Command::new("ip").arg("-V").output().is_ok()
            && Command::new("nft").arg("-v").output().is_ok()
    }

    /// Makes the namespace and its link, both up.
    pub fn new() -> Result<NetNs, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names are at most 15 bytes; the subnet is picked from the pid and
        // the counter so concurrent tests (and test runs) do not collide.
        let tag = format!("{:x}", (pid << 4 | n) & 0xffffff);
        let subnet = format!("10.{}.{}", 100 + (pid % 100), (n * 7 + pid / 100) % 250 + 1);
        let ns = NetNs {
            name: format!("kvs-{tag}"),
            table: format!("kvs_part_{tag}"),
            host_ip: format!("{subnet}.1"),
            ns_ip: format!("{subnet}.2"),
        };
        let (host_if, ns_if) = (format!("kh{tag}"), format!("kn{tag}"));
        run(&["ip", "netns", "add", &ns.name])?;
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        run(&["ip", "link", "set", &ns_if, "netns", &ns.name])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", ns.host_ip),
            "dev",
            &host_if,
        ])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &ns.name];
            all.extend_from_slice(args);
            run(&all)
        };
        inside(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", ns.ns_ip),
            "dev",
            &ns_if,
        ])?;
        inside(&["ip", "link", "set", &ns_if, "up"])?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Cuts the link for TCP to and from `ports` on this side (the namespace can still
    /// be reached on other ports, so a test can watch it through the partition):
    /// packets are dropped, not refused.
    pub fn partition(&self, ports: &[u16]) -> Result<(), String> {
        let ports = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let (t, peer) = (&self.table, &self.ns_ip);
        nft(&format!(
            "add table inet {t}
             add chain inet {t} inbound {{ type filter hook input priority 0; }}
             add chain inet {t} outbound {{ type filter hook output priority 0; }}
             add rule inet {t} inbound ip saddr {peer} tcp dport {{ {ports} }} drop
             add rule inet {t} outbound ip daddr {peer} tcp sport {{ {ports} }} drop"
        ))
    }

    /// Restores the link [`NetNs::partition`] cut.
    pub fn heal(&self) -> Result<(), String> {
        nft(&format!("delete table inet {}", self.table))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = self.heal();
        // Deleting the namespace deletes its end of the veth pair, and with it ours.
        let _ = run(&["ip", "netns", "delete", &self.name]);
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
