//! Other hosts for cluster tests, made of network namespaces:
//!
//! * [`NetNs`]: a second host joined to this one by a veth pair, and a partition between
//!   them made of nftables rules that silently drop packets (as a cut link does: no
//!   reset, no error, connections just stop).
//! * [`Lan`]: a bridge in this namespace and any number of hosts on it ([`LanHost`],
//!   each a namespace with one veth port on the bridge), so the processes of a cluster
//!   (etcd members, kvs nodes) each get a host of their own: a host's cable can be
//!   pulled ([`LanHost::cut`]: isolated from every other host, and from this one) or
//!   some of its traffic dropped ([`LanHost::partition`]).
//!
//! Needs root (CI is). Everything it makes — namespaces, veth pairs, the bridge,
//! nftables tables — is its own, named after the process and a counter, and removed on
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

/// Runs an nftables script (`nft -f -`), after `prefix` (e.g. `ip netns exec NAME`).
fn nft_in(prefix: &[String], script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg("nft");
            c
        }
        None => Command::new("nft"),
    };
    let mut child = command
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

/// Runs an nftables script in this namespace.
fn nft(script: &str) -> Result<(), String> {
    nft_in(&[], script)
}

/// The command prefix that runs a program in the namespace `name`.
fn exec_prefix(name: &str) -> Vec<String> {
    ["ip", "netns", "exec", name].map(String::from).to_vec()
}

/// Makes the namespace `name` with a veth pair: `inner` inside it, with `ip`/24 and
/// up (and its loopback up), `outer` here (down, for the caller to address or attach).
fn linked_namespace(name: &str, outer: &str, inner: &str, ip: &str) -> Result<(), String> {
    run(&["ip", "netns", "add", name])?;
    run(&[
        "ip", "link", "add", outer, "type", "veth", "peer", "name", inner,
    ])?;
    run(&["ip", "link", "set", inner, "netns", name])?;
    let inside = |args: &[&str]| {
        let mut all = vec!["ip", "netns", "exec", name];
        all.extend_from_slice(args);
        run(&all)
    };
    inside(&["ip", "addr", "add", &format!("{ip}/24"), "dev", inner])?;
    inside(&["ip", "link", "set", inner, "up"])?;
    inside(&["ip", "link", "set", "lo", "up"])
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
        linked_namespace(&ns.name, &host_if, &ns_if, &ns.ns_ip)?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", ns.host_ip),
            "dev",
            &host_if,
        ])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        Ok(ns)
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        exec_prefix(&self.name)
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

/// A test's own LAN: a bridge here, with `host_ip` (this namespace on the LAN), and the
/// hosts made on it.
pub struct Lan {
    bridge: String,
    tag: String,
    subnet: String,
    /// This namespace's address on the LAN.
    pub host_ip: String,
    next: AtomicU32,
}

/// One host on a [`Lan`]: a network namespace whose only link is a port on the bridge.
pub struct LanHost {
    name: String,
    /// The bridge's end of its cable.
    port: String,
    table: String,
    /// Its address on the LAN.
    pub ip: String,
}

impl Lan {
    /// Makes the bridge, up, with this namespace's address on it.
    pub fn new() -> Result<Lan, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:x}", (pid << 4 | n) & 0xfffff);
        // Beside NetNs's 10.100-199.x.0/24 subnets.
        let subnet = format!("10.{}.{}", 200 + (pid % 50), (n * 11 + pid / 50) % 250 + 1);
        let lan = Lan {
            bridge: format!("kb{tag}"),
            host_ip: format!("{subnet}.1"),
            subnet,
            tag,
            next: AtomicU32::new(10),
        };
        run(&["ip", "link", "add", &lan.bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lan.host_ip),
            "dev",
            &lan.bridge,
        ])?;
        run(&["ip", "link", "set", &lan.bridge, "up"])?;
        Ok(lan)
    }

    /// A new host on the LAN, its link up.
    pub fn host(&self) -> Result<LanHost, String> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let host = LanHost {
            name: format!("kvs-{}-{i}", self.tag),
            port: format!("kp{}{i}", self.tag),
            table: format!("kvs_lan_{}_{i}", self.tag),
            ip: format!("{}.{i}", self.subnet),
        };
        let inner = format!("ki{}{i}", self.tag);
        linked_namespace(&host.name, &host.port, &inner, &host.ip)?;
        run(&["ip", "link", "set", &host.port, "master", &self.bridge])?;
        run(&["ip", "link", "set", &host.port, "up"])?;
        Ok(host)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "delete", &self.bridge]);
    }
}

impl LanHost {
    /// The command prefix that runs a program on this host.
    pub fn exec_prefix(&self) -> Vec<String> {
        exec_prefix(&self.name)
    }

    /// Pulls its cable: the bridge's port goes down, and every packet to or from the
    /// host is lost (no reset, no error) until [`LanHost::mend`].
    pub fn cut(&self) -> Result<(), String> {
        run(&["ip", "link", "set", &self.port, "down"])
    }

    /// Plugs the cable back in.
    pub fn mend(&self) -> Result<(), String> {
        run(&["ip", "link", "set", &self.port, "up"])
    }

    /// Drops, on this host, TCP to and from `ports` elsewhere (its clients on other
    /// ports still reach it): packets are dropped, not refused.
    pub fn partition(&self, ports: &[u16]) -> Result<(), String> {
        let ports: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        let ports = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let t = &self.table;
        self.nft(&format!(
            "add table inet {t}
             add chain inet {t} inbound {{ type filter hook input priority 0; }}
             add chain inet {t} outbound {{ type filter hook output priority 0; }}
             add rule inet {t} inbound tcp sport {{ {ports} }} drop
             add rule inet {t} outbound tcp dport {{ {ports} }} drop"
        ))
    }

    /// Restores what [`LanHost::partition`] dropped.
    pub fn heal(&self) -> Result<(), String> {
        self.nft(&format!("delete table inet {}", self.table))
    }

    fn nft(&self, script: &str) -> Result<(), String> {
        nft_in(&self.exec_prefix(), script).map_err(|e| format!("in {}: {e}", self.name))
    }
}

impl Drop for LanHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it the
        // bridge's.
        let _ = run(&["ip", "netns", "delete", &self.name]);
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
