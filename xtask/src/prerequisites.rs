//! What the test suite needs from Debian besides the Rust toolchain, checked before
//! anything is built: `cargo xtask test` on a fresh machine installs what is missing
//! when run as root (`apt-get update` once, then one `apt-get install`), and otherwise
//! stops with the one command to run. `cargo xtask build` checks (and installs) only the
//! toolchains of the C and AssemblyScript guests it builds.

use std::process::{Command, Stdio};

use anyhow::{Result, bail};

/// A program (or Python module) a test or the build uses, and the Debian package that
/// provides it.
struct Need {
    what: &'static str,
    present: fn() -> bool,
    package: &'static str,
}

fn command_exists(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The tests run Debian's Python (`/usr/bin/python3`), whose modules come as packages.
fn python_module(name: &str) -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", &format!("import {name}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What `cargo xtask build` needs for the non-Rust guests (`wasm-plugins/c`,
/// `wasm-plugins/assemblyscript`; see `abi_guests`): checked, and installed when run as
/// root, by `build` as well as `test`.
const GUEST_NEEDS: &[Need] = &[
    Need {
        what: "clang (compiles the C guest for wasm32-wasi)",
        present: || command_exists("clang"),
        package: "clang",
    },
    Need {
        what: "wasm-ld (links the C guest)",
        present: || command_exists("wasm-ld"),
        package: "lld",
    },
    Need {
        what: "wasi-libc (the C guest's libc, /usr/include/wasm32-wasi)",
        present: || std::path::Path::new("/usr/include/wasm32-wasi/stdio.h").is_file(),
        package: "wasi-libc",
    },
    Need {
        what: "compiler-rt's builtins for wasm32 (clang links them into every wasm32-wasi module)",
        present: || {
            std::fs::read_dir("/usr/lib/llvm-14/lib/clang").is_ok_and(|versions| {
                versions.filter_map(|v| v.ok()).any(|v| {
                    v.path()
                        .join("lib/wasi/libclang_rt.builtins-wasm32.a")
                        .is_file()
                })
            })
        },
        package: "libclang-rt-14-dev-wasm32",
    },
    Need {
        what: "node (runs the AssemblyScript compiler)",
        present: || command_exists("node"),
        package: "nodejs",
    },
    Need {
        what: "npm (installs the pinned AssemblyScript compiler into the target directory)",
        present: || command_exists("npm"),
        package: "npm",
    },
];

const NEEDS: &[Need] = &[
    Need {
        what: "PostgreSQL's server binaries (initdb, pg_ctl: the postgres tests' clusters)",
        present: || {
            std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
                versions
                    .filter_map(|v| v.ok())
                    .any(|v| v.path().join("bin/initdb").is_file())
            })
        },
        package: "postgresql",
    },
    Need {
        what: "curl (fetches the published extism to check vendor/extism; REST over TLS)",
        present: || command_exists("curl"),
        package: "curl",
    },
    Need {
        what: "patch (applies vendor/extism/kvs.patch to the published extism)",
        present: || command_exists("patch"),
        package: "patch",
    },
    Need {
        what: "openssl (the security tests' certificates)",
        present: || command_exists("openssl"),
        package: "openssl",
    },
    Need {
        what: "strace (records the WASM logger's disk operations)",
        present: || command_exists("strace"),
        package: "strace",
    },
    Need {
        what: "prometheus and promtool (scrape and lint /metrics)",
        present: || command_exists("prometheus") && command_exists("promtool"),
        package: "prometheus",
    },
    Need {
        what: "etcd (the cluster tests' members)",
        present: || command_exists("etcd"),
        package: "etcd-server",
    },
    Need {
        what: "etcdctl (the cluster tests read etcd with it)",
        present: || command_exists("etcdctl"),
        package: "etcd-client",
    },
    Need {
        what: "protoc (the etcd logger's build compiles etcd's protos)",
        present: || command_exists("protoc"),
        package: "protobuf-compiler",
    },
    Need {
        what: "redis-cli and redis-benchmark (the Redis frontends' tests)",
        present: || command_exists("redis-cli") && command_exists("redis-benchmark"),
        package: "redis-tools",
    },
    Need {
        what: "redis-server (the differential test compares kvs's replies with Redis's)",
        present: || command_exists("redis-server"),
        package: "redis-server",
    },
    Need {
        what: "tclsh (`cargo xtask redis-compat` runs Redis's own Tcl tests)",
        present: || command_exists("tclsh"),
        package: "tcl",
    },
    Need {
        what: "redis-py (the Redis frontends' tests)",
        present: || python_module("redis"),
        package: "python3-redis",
    },
    Need {
        what: "grpcio for Python (a gRPC client no kvs code wrote)",
        present: || python_module("grpc"),
        package: "python3-grpcio",
    },
    Need {
        what: "nft (the partition test cuts a node off with nftables rules)",
        present: || command_exists("nft"),
        package: "nftables",
    },
    Need {
        what: "man (a test renders kvs's manual page)",
        present: || command_exists("man"),
        package: "man-db",
    },
    Need {
        what: "systemd-analyze (a test verifies the systemd unit in dist/)",
        present: || command_exists("systemd-analyze"),
        package: "systemd",
    },
    Need {
        what: "ip (the partition test's network namespace and veth pair)",
        present: || command_exists("ip"),
        package: "iproute2",
    },
];

fn missing(needs: &'static [Need]) -> Vec<&'static Need> {
    needs.iter().filter(|n| !(n.present)()).collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes sure every package the tests need is installed (see the module docs).
pub fn ensure() -> Result<()> {
    ensure_packages(NEEDS)?;
    ensure_guest_toolchains()
}

/// Makes sure the C and AssemblyScript guests' toolchains are installed (`cargo xtask
/// test` and `cargo xtask abi-guests` build those guests).
pub fn ensure_guest_toolchains() -> Result<()> {
    ensure_packages(GUEST_NEEDS)
}

fn ensure_packages(needs: &'static [Need]) -> Result<()> {
    let missing = missing(needs);
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|n| n.package).collect();
    packages.dedup();
    for need in &missing {
        eprintln!(
            "xtask: missing {} (Debian package {})",
            need.what, need.package
        );
    }
    let command = format!("apt-get install -y {}", packages.join(" "));
    if !is_root() {
        bail!(
            "the build or the tests need Debian packages that are not installed; install them \
             with\n\n    sudo apt-get update && sudo {command}\n\nand run `cargo xtask` again"
        );
    }
    eprintln!("xtask: installing {} (apt-get)", packages.join(" "));
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["update", "-qq"]) {
        bail!("`apt-get update` failed; install the packages by hand: {command}");
    }
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(&packages);
    if !apt(&install) {
        bail!("`{command}` failed");
    }
    let still: Vec<&str> = self::missing(needs).iter().map(|n| n.what).collect();
    if !still.is_empty() {
        bail!("still missing after installing: {}", still.join("; "));
    }
    Ok(())
}
