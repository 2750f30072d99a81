//! A throwaway etcd cluster: N members (Debian's `etcd-server`) on free loopback ports,
//! or each on a host of its own on a test's [`Lan`] (so its link can be cut), each with
//! its own data directory, stopped and restarted one by one as a test needs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{Lan, LanHost};

/// One member: its name, address, ports, and process while it runs.
struct Member {
    name: String,
    /// `127.0.0.1`, or its host's address on the LAN.
    ip: String,
    client_port: u16,
    peer_port: u16,
    /// Its own host on a LAN, if it has one.
    host: Option<LanHost>,
    child: Option<Child>,
}

/// Certificates for TLS on the members' client URLs, with client certificates required.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA that signed the server's and the clients' certificates.
    pub ca: PathBuf,
    /// The members' certificate (valid for 127.0.0.1) and key.
    pub cert: PathBuf,
    /// See `cert`.
    pub key: PathBuf,
    /// A client certificate and key etcdctl uses.
    pub client_cert: PathBuf,
    /// See `client_cert`.
    pub client_key: PathBuf,
}

/// A running etcd cluster; every member is killed when it drops.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<EtcdTls>,
    /// Another address the members' client URLs listen on besides 127.0.0.1 (a test's
    /// own veth address, for a node in a network namespace).
    also_on: Option<String>,
}

/// `n` distinct free loopback ports. The listeners are held until all are picked: one
/// dropped at once may be handed out again by the next bind, and two members given the
/// same port never form a cluster.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound listener's address").port())
        .collect()
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader.
    pub fn start(size: usize) -> EtcdCluster {
        Self::start_with(size, None)
    }

    /// [`EtcdCluster::start`], with TLS and client certificates on the client URLs if
    /// `tls` is given.
    pub fn start_with(size: usize, tls: Option<EtcdTls>) -> EtcdCluster {
        Self::start_full(size, tls, None, None)
    }

    /// [`EtcdCluster::start`], the client URLs also listening on `ip` (an address the
    /// test made itself, such as the host end of a veth pair).
    pub fn start_also_on(size: usize, ip: &str) -> EtcdCluster {
        Self::start_full(size, None, Some(ip.to_string()), None)
    }

    /// [`EtcdCluster::start`], each member on a host of its own on `lan` (etcd's usual
    /// ports, 2379 and 2380, on its address there): [`EtcdCluster::cut`] pulls a
    /// member's cable.
    pub fn start_on_lan(size: usize, lan: &Lan) -> EtcdCluster {
        Self::start_full(size, None, None, Some(lan))
    }

    fn start_full(
        size: usize,
        tls: Option<EtcdTls>,
        also_on: Option<String>,
        lan: Option<&Lan>,
    ) -> EtcdCluster {
        assert!(
            Command::new("etcd").arg("--version").output().is_ok(),
            "etcd is needed: apt-get install etcd-server"
        );
        let ports = free_ports(2 * size);
        let members: Vec<Member> = (1..=size)
            .map(|i| {
                let name = format!("m{i}");
                match lan {
                    Some(lan) => {
                        let host = lan.host().expect("a host on the test's LAN");
                        Member {
                            name,
                            ip: host.ip.clone(),
                            client_port: 2379,
                            peer_port: 2380,
                            host: Some(host),
                            child: None,
                        }
                    }
                    None => Member {
                        name,
                        ip: "127.0.0.1".into(),
                        client_port: ports[2 * (i - 1)],
                        peer_port: ports[2 * (i - 1) + 1],
                        host: None,
                        child: None,
                    },
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}:{}", m.name, m.ip, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir: tempfile::tempdir().expect("a temporary directory"),
            members,
            initial_cluster,
            tls,
            also_on,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let data: PathBuf = self.dir.path().join(&self.members[i].name);
        let scheme = self.scheme();
        let m = &mut self.members[i];
        let client = format!("{scheme}://{}:{}", m.ip, m.client_port);
        let listen_client = match &self.also_on {
            Some(ip) => format!("{client},{scheme}://{ip}:{}", m.client_port),
            None => client.clone(),
        };
        let peer = format!("http://{}:{}", m.ip, m.peer_port);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name)))
            .expect("etcd log file");
        let mut command = match &m.host {
            Some(host) => {
                let prefix = host.exec_prefix();
                let mut c = Command::new(&prefix[0]);
                c.args(&prefix[1..]).arg("etcd");
                c
            }
            None => Command::new("etcd"),
        };
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &listen_client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "kvs-test",
            ])
            // Fast elections, so tests that stop members do not wait long.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        m.child = Some(child);
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Every member's client URL, for a client's `endpoints`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| self.endpoint(m)).collect()
    }

    fn endpoint(&self, m: &Member) -> String {
        format!("{}://{}:{}", self.scheme(), m.ip, m.client_port)
    }

    /// Pulls member `i`'s cable (it must be on a LAN): nothing reaches it or leaves it,
    /// neither the other members nor clients, until [`EtcdCluster::mend`].
    pub fn cut(&self, i: usize) {
        let host = self.members[i].host.as_ref().expect("a member on a LAN");
        host.cut().expect("cut a member's link");
    }

    /// Plugs member `i`'s cable back in.
    pub fn mend(&self, i: usize) {
        let host = self.members[i].host.as_ref().expect("a member on a LAN");
        host.mend().expect("mend a member's link");
    }

    /// Every member's client URL at the extra address given to
    /// [`EtcdCluster::start_also_on`].
    pub fn endpoints_on(&self, ip: &str) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://{ip}:{}", self.scheme(), m.client_port))
            .collect()
    }

    /// The members' client ports.
    pub fn client_ports(&self) -> Vec<u16> {
        self.members.iter().map(|m| m.client_port).collect()
    }

    /// The index of the member that is the leader now, if a running one says so.
    pub fn leader(&self) -> Option<usize> {
        let out = self
            .etcdctl_command()
            .args(["--command-timeout=2s", "endpoint", "status", "-w", "json"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // [{"Endpoint":"http://127.0.0.1:P","Status":{"header":{"member_id":M,...},"leader":L,...}}]
        for entry in text.split("{\"Endpoint\":").skip(1) {
            let number = |field: &str| {
                let at = entry.find(field)? + field.len();
                let digits: String = entry[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                digits.parse::<u64>().ok()
            };
            if number("\"member_id\":") == number("\"leader\":") {
                // The entry starts with its endpoint, quoted.
                let endpoint = entry.strip_prefix('"')?.split('"').next()?;
                return self
                    .members
                    .iter()
                    .position(|m| self.endpoint(m) == endpoint);
            }
        }
        None
    }

    /// Stops member `i` with SIGSTOP: it keeps its connections and accepts new ones
    /// (the kernel does), but answers nothing: a hung member.
    pub fn pause(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// Resumes a member [`EtcdCluster::pause`] stopped.
    pub fn resume(&self, i: usize) {
        self.signal(i, "CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let child = self.members[i].child.as_ref().expect("member running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} member {i}");
    }

    /// `etcdctl` aimed at the running members (with the client certificate under TLS).
    fn etcdctl_command(&self) -> Command {
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| self.endpoint(m))
            .collect();
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", running.join(",")));
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        command
    }

    /// Stops member `i` (SIGKILL: as abrupt as a crash).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    /// `etcdctl ARGS` against the running members; its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = self
            .etcdctl_command()
            .args(args)
            .output()
            .expect("etcdctl (Debian package etcd-client)");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until a quorum answers a linearizable read.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self
                .etcdctl_command()
                .args(["--command-timeout=2s", "get", "health-probe"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd cluster not healthy after {timeout:?}; logs in {}",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_some() {
                self.resume(i); // a paused member would not die of SIGKILL any later
            }
            self.stop(i);
        }
    }
}
