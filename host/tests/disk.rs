//! Disk faults under a real kvs: the file logger on a full disk (a small tmpfs the test
//! mounts; the tests run as root, as CI does).

use std::path::Path;
use std::process::Command;

use crate::util::{Kvs, http_client, staged_plugins};

/// A tmpfs of `size` mounted at `dir`, unmounted when dropped.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Tmpfs<'a> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (the disk tests need root, as CI has)",
            dir.display()
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

#[test]
fn a_full_disk_answers_507_keeps_every_acknowledged_write_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _disk = Tmpfs::mount(&data, "2m");
    // Room the test gives back later, as an operator deleting old files would.
    let ballast = data.join("ballast");
    std::fs::write(&ballast, vec![1u8; 512 << 10]).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "logger = \"file\"\nfrontends = [\"rest\"]\n\
             [plugins.file]\npath = {:?}\nsync = \"always\"\n\
             [plugins.rest]\nlisten = \"127.0.0.1:0\"\n",
            data.join("kvs.log")
        ),
    )
    .unwrap();
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let client = http_client();
    let put = |key: &str, value: Vec<u8>| {
        let r = client
            .put(kvs.at(&format!("/v1/key/{key}")))
            .body(value)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let value = |n: usize| vec![b'a' + (n % 26) as u8; 64 << 10];

    // Fill the disk: every write is acknowledged (201) until one is refused with 507.
    let mut acked = 0;
    let refusal = loop {
        match put(&format!("k{acked}"), value(acked)) {
            (201, _) => acked += 1,
            other => break other,
        }
        assert!(acked < 100, "2 MiB never filled up");
    };
    assert_eq!(
        refusal.0, 507,
        "a full disk is 507 Insufficient Storage: {refusal:?}"
    );
    assert!(
        refusal.1.contains("space"),
        "the answer says why: {}",
        refusal.1
    );
    assert!(acked > 10, "only {acked} writes fitted");
    // It stays a clear refusal, not a broken logger.
    assert_eq!(put("again", value(0)).0, 507);

    // Space comes back: writes succeed again without a restart.
    std::fs::remove_file(&ballast).unwrap();
    assert_eq!(put("after", b"freed".to_vec()).0, 201, "recovers by itself");

    // Every acknowledged write, and none of the refused ones, after a restart.
    kvs.stop();
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let client = http_client();
    let get = |key: &str| {
        let r = client
            .get(kvs.at(&format!("/v1/key/{key}")))
            .send()
            .unwrap();
        (r.status().as_u16(), r.bytes().unwrap().to_vec())
    };
    for n in 0..acked {
        assert_eq!(get(&format!("k{n}")), (200, value(n)), "k{n}");
    }
    assert_eq!(
        get(&format!("k{acked}")).0,
        404,
        "the refused write was not kept"
    );
    assert_eq!(get("again").0, 404);
    assert_eq!(get("after"), (200, b"freed".to_vec()));
    kvs.stop();
}
