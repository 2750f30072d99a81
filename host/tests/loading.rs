//! Discovery and loading of real compiled plug-ins.

use kvs_host::lifecycle::open_logger;
use kvs_host::plugins::Catalog;
use kvs_plugin_api::{API_MAJOR, API_MINOR};
use kvs_plugin_api::{Event, PluginKind};

use crate::util::{kvs_command, lib, plugin_dir};

/// Shared libraries on every Debian machine that are certainly not kvs plug-ins (libc
/// is always there; loading it again is harmless).
const SYSTEM_LIBRARIES: [&str; 4] = [
    "/lib/x86_64-linux-gnu/libz.so.1",
    "/usr/lib/x86_64-linux-gnu/libz.so.1",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
];

fn system_library() -> Option<std::path::PathBuf> {
    let found = SYSTEM_LIBRARIES
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        // Say so: a silently skipped check reads as a passed one.
        eprintln!(
            "SKIPPED: none of {SYSTEM_LIBRARIES:?} exists, so refusing a real shared \
             library that is not a kvs plug-in was not checked"
        );
    }
    found
}

#[test]
fn refuses_bad_files_with_reasons_and_keeps_the_good_ones() {
    let dir = plugin_dir(&[
        "kvs_fixture_memory_logger",
        "kvs_fixture_wrong_major",
        "kvs_fixture_newer_minor",
        "kvs_plugin_file",
    ]);
    std::fs::write(dir.path().join("junk.so"), b"this is not an ELF file").unwrap();
    let system = system_library();
    if let Some(lib) = &system {
        std::fs::copy(lib, dir.path().join("system.so")).unwrap();
    }
    let catalog = Catalog::scan(dir.path()).unwrap();
    let names: Vec<&str> = catalog.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["file", "memory"]);

    let reason = |file: &str| {
        catalog
            .refused
            .iter()
            .find(|r| r.path.file_name().unwrap() == file)
            .unwrap_or_else(|| panic!("{file} not refused: {:?}", catalog.refused))
            .reason
            .clone()
    };
    let wrong_major = reason("libkvs_fixture_wrong_major.so");
    assert!(
        wrong_major.contains("plugin-api 2.0")
            && wrong_major.contains(&format!("plugin-api {API_MAJOR}.{API_MINOR}"))
            && wrong_major.contains("rebuild the plug-in against plugin-api 1.x"),
        "{wrong_major}"
    );
    let newer = reason("libkvs_fixture_newer_minor.so");
    // A plug-in of the next minor (1.2 against this 1.1 host) names both versions.
    assert!(
        newer.contains(&format!("plugin-api {API_MAJOR}.{}", API_MINOR + 1))
            && newer.contains(&format!("this kvs's plugin-api {API_MAJOR}.{API_MINOR}"))
            && newer.contains("upgrade kvs"),
        "{newer}"
    );
    assert!(reason("junk.so").contains("not a loadable shared library"));
    if system.is_some() {
        assert!(reason("system.so").contains("not a kvs plug-in"));
    }
}

/// An Extism guest compiled for this machine instead of WebAssembly, as a C stand-in
/// (gcc): with immediate binding (what Rust links with) its host-function imports are
/// undefined symbols; with lazy binding it loads and exports `kvs_handshake`. Both are
/// refused saying to rebuild for wasm32-wasip1.
#[test]
fn a_wasm_guest_built_for_the_host_is_told_to_rebuild_for_wasm32() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("guest.c");
    std::fs::write(
        &source,
        "extern long kvs_get(long);\nint kvs_handshake(void) { return 0; }\n\
         long kvs_http_handle(void) { return kvs_get(1); }\n",
    )
    .unwrap();
    for (file, flags) in [("libnow.so", "-Wl,-z,now"), ("liblazy.so", "-Wl,-z,lazy")] {
        let built = std::process::Command::new("gcc")
            .args(["-shared", "-fPIC", flags, "-o"])
            .arg(dir.path().join(file))
            .arg(&source)
            .status()
            .expect("gcc");
        assert!(built.success());
    }
    let catalog = Catalog::scan(dir.path()).unwrap();
    assert_eq!(catalog.refused.len(), 2, "{:?}", catalog.refused);
    for refused in &catalog.refused {
        assert!(
            refused
                .reason
                .contains("built for this machine instead of WebAssembly")
                && refused.reason.contains("--target wasm32-wasip1"),
            "{}: {}",
            refused.path.display(),
            refused.reason
        );
    }
}

#[test]
fn two_loggers_loaded_side_by_side_stay_distinct() {
    // abi_stable's RootModule::load_from_* would hand back the first library for the
    // second; each plug-in must keep its own code.
    let dir = plugin_dir(&[
        "kvs_fixture_memory_logger",
        "kvs_plugin_file",
        "kvs_fixture_panicky",
    ]);
    let catalog = Catalog::scan(dir.path()).unwrap();
    assert_eq!(catalog.plugins.len(), 3, "{:?}", catalog.refused);
    let memory = catalog.find(PluginKind::LOGGER, "memory").unwrap();
    let file = catalog.find(PluginKind::LOGGER, "file").unwrap();

    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("side.log");
    let mut file_logger = open_logger(file, &format!("path = {log_path:?}\n")).unwrap();
    let mut memory_logger = open_logger(
        memory,
        &format!("namespace = {:?}\n", crate::util::namespace("side")),
    )
    .unwrap();

    let events = [Event::put(1, b"k", b"from-file")];
    file_logger.append(&events).unwrap();
    let events = [
        Event::put(1, b"k", b"from-memory"),
        Event::put(2, b"j", b""),
    ];
    memory_logger.append(&events).unwrap();
    file_logger.close().unwrap();
    memory_logger.close().unwrap();

    // The file logger wrote a file; the memory logger did not, and each replays its own.
    assert!(std::fs::metadata(&log_path).unwrap().len() > 16);
    let replayed = |logger: &mut dyn kvs_host::ports::Log| {
        let map = kvs_host::store::Map::default();
        kvs_host::writer::replay(logger, &map).unwrap();
        let mut all: Vec<(Vec<u8>, Vec<u8>)> = map
            .iter()
            .map(|e| (e.key().to_vec(), e.value().to_vec()))
            .collect();
        all.sort();
        all
    };
    let mut file_again = open_logger(file, &format!("path = {log_path:?}\n")).unwrap();
    assert_eq!(
        replayed(file_again.as_mut()),
        [(b"k".to_vec(), b"from-file".to_vec())]
    );
    // A config only the file logger accepts is refused by the memory logger's own code.
    let err = match open_logger(memory, &format!("path = {log_path:?}\n")) {
        Ok(_) => panic!("memory logger accepted the file logger's config"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("unknown field") && err.contains("path"),
        "{err}"
    );
}

#[test]
fn duplicate_names_are_an_error_naming_both_paths() {
    let dir = plugin_dir(&["kvs_fixture_memory_logger"]);
    let copy = dir.path().join("libanother_copy.so");
    std::fs::copy(lib("kvs_fixture_memory_logger"), &copy).unwrap();
    let catalog = Catalog::scan(dir.path()).unwrap();
    let err = catalog
        .find(PluginKind::LOGGER, "memory")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("libanother_copy.so") && err.contains("libkvs_fixture_memory_logger.so"),
        "{err}"
    );
    assert_eq!(catalog.duplicates().len(), 1);

    let (code, stdout, _) = kvs_command(&[
        "plugins",
        "list",
        "--plugins-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("duplicate") && stdout.contains("libanother_copy.so"),
        "{stdout}"
    );
}

#[test]
fn unknown_name_lists_what_is_available() {
    let dir = plugin_dir(&["kvs_fixture_memory_logger", "kvs_fixture_panicky"]);
    let catalog = Catalog::scan(dir.path()).unwrap();
    let err = catalog
        .find(PluginKind::LOGGER, "nope")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"nope\"") && err.contains("memory, panicky"),
        "{err}"
    );
    let err = catalog
        .find(PluginKind::FRONTEND, "memory")
        .unwrap_err()
        .to_string();
    assert!(err.contains("available frontends: none"), "{err}");
}

#[test]
fn plugins_list_shows_versions_and_refusals() {
    let dir = plugin_dir(&["kvs_fixture_memory_logger", "kvs_fixture_wrong_major"]);
    let (code, stdout, stderr) = kvs_command(&[
        "plugins",
        "list",
        "--plugins-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.contains("memory") && l.contains("native"))
        .unwrap_or_else(|| panic!("no memory row:\n{stdout}"));
    assert!(
        row.contains("logger") && row.contains("0.1.0") && row.contains("1.0"),
        "{row}"
    );
    assert!(
        stdout.contains("refused:") && stdout.contains("plugin-api 2.0"),
        "{stdout}"
    );
}

#[test]
fn missing_plugins_dir_says_how_to_fix_it() {
    let (code, _, stderr) = kvs_command(&["plugins", "list", "--plugins-dir", "/nonexistent/kvs"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("/nonexistent/kvs") && stderr.contains("cargo xtask build"),
        "{stderr}"
    );
}

/// Sets `path`'s permission bits.
fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Opening a native plug-in runs its code as kvs, so a `.so` that someone else could
/// have changed is refused before it is opened: writable by group or others, owned by
/// another user, or in a directory everyone can write (without the sticky bit). The
/// reason names the path, the mode and the fix; `plugins_insecure_modes = true` loads it
/// with a warning instead.
#[test]
fn native_plug_ins_that_others_could_change_are_refused() {
    let refusal = |dir: &std::path::Path| {
        let catalog = Catalog::scan(dir).unwrap();
        assert!(catalog.plugins.is_empty(), "{:?}", catalog.plugins);
        assert_eq!(catalog.refused.len(), 1, "{:?}", catalog.refused);
        catalog.refused[0].reason.clone()
    };
    let so = "libkvs_plugin_file.so";

    let world = plugin_dir(&["kvs_plugin_file"]);
    chmod(&world.path().join(so), 0o777);
    let why = refusal(world.path());
    assert!(
        why.contains("writable by everyone")
            && why.contains("mode 777")
            && why.contains("chmod go-w"),
        "{why}"
    );

    let group = plugin_dir(&["kvs_plugin_file"]);
    chmod(&group.path().join(so), 0o775);
    let why = refusal(group.path());
    assert!(why.contains("writable by its group"), "{why}");

    let other_owner = plugin_dir(&["kvs_plugin_file"]);
    std::os::unix::fs::chown(other_owner.path().join(so), Some(65534), None).unwrap();
    let why = refusal(other_owner.path());
    assert!(why.contains("owned by user 65534"), "{why}");

    let open_dir = plugin_dir(&["kvs_plugin_file"]);
    chmod(open_dir.path(), 0o777);
    let why = refusal(open_dir.path());
    assert!(
        why.contains("which everyone can write") && why.contains("chmod o-w"),
        "{why}"
    );
    // A directory its group can write, or another user owns: its writers can replace
    // the file too.
    let group_dir = plugin_dir(&["kvs_plugin_file"]);
    chmod(group_dir.path(), 0o775);
    let why = refusal(group_dir.path());
    assert!(why.contains("which its group can write"), "{why}");
    let owned_dir = plugin_dir(&["kvs_plugin_file"]);
    std::os::unix::fs::chown(owned_dir.path(), Some(65534), None).unwrap();
    let why = refusal(owned_dir.path());
    assert!(why.contains("owned by user 65534"), "{why}");
    // A symbolic link to a well-kept file, itself in a directory everyone can write: the
    // link can be pointed elsewhere, so it is refused too (the probe found it accepted).
    let safe = plugin_dir(&["kvs_plugin_file"]);
    let links = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(safe.path().join(so), links.path().join("linked.so")).unwrap();
    chmod(links.path(), 0o777);
    let why = refusal(links.path());
    assert!(why.contains("which everyone can write"), "{why}");
    // With the sticky bit (as /tmp has) only a file's owner may replace it: accepted.
    chmod(open_dir.path(), 0o1777);
    let catalog = Catalog::scan(open_dir.path()).unwrap();
    assert_eq!(catalog.plugins.len(), 1, "{:?}", catalog.refused);

    // The override: loaded, with a warning that says what is wrong.
    let config = world.path().join("kvs.toml");
    std::fs::write(&config, "plugins_insecure_modes = true\n").unwrap();
    let (code, out, err) = kvs_command(&[
        "--config",
        config.to_str().unwrap(),
        "--plugins-dir",
        world.path().to_str().unwrap(),
        "plugins",
        "list",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" file "), "{out}");
    assert!(
        err.contains("plugins_insecure_modes = true") && err.contains("writable by everyone"),
        "{err}"
    );
}

/// The layout `cargo xtask build` stages passes the rule.
#[test]
fn the_staged_plug_ins_pass_the_file_mode_rule() {
    let catalog = Catalog::scan(&crate::util::staged_plugins()).unwrap();
    assert!(catalog.refused.is_empty(), "{:?}", catalog.refused);
    assert!(catalog.plugins.len() >= 6, "{:?}", catalog.plugins);
    // A reader that goes away early (`| head`) is no error (it used to panic, 101).
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {:?} --plugins-dir {:?} plugins list | true",
            env!("CARGO_BIN_EXE_kvs"),
            crate::util::staged_plugins()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "kvs plugins list | true: {status}");
}
