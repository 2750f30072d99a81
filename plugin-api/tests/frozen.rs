//! Released contract minors are frozen: what a plug-in of 1.0, 1.1, 1.2 or 1.3 and a
//! host agree on never changes, and this test says so when it does.
//!
//! For every released minor in [`RELEASED`] it compares, against the snapshots in
//! `plugin-api/frozen/`:
//!
//! * `native-1.N.txt`: the abi_stable layouts (`<T as StableAbi>::LAYOUT`) of the
//!   minor's native roots and every type they reach (see `frozen/layout.rs`), plus
//!   the offsets the host reads by hand, without abi_stable's check;
//! * `wasm-1.N.txt`: the host functions a guest of that minor may import and the
//!   exports a host of that minor calls, from [`kvs_plugin_api::wasm_abi`].
//!
//! On a difference it fails, naming the minor, the type (or WASM function) and the
//! lines that differ. A snapshot is never regenerated: a released minor's contract
//! does not change, so the change belongs in the next minor's module. When a minor is
//! released, add its row to [`RELEASED`] and write its snapshots once with
//! `KVS_FREEZE_MINOR=1.N cargo test -p kvs-plugin-api --test frozen`, which writes only
//! snapshots that are missing and refuses to overwrite one.

// The native layouts need the `native` feature (the default).
#![cfg(feature = "native")]

#[path = "frozen/layout.rs"]
mod layout;
#[path = "frozen/snapshot.rs"]
mod snapshot;

use std::path::{Path, PathBuf};

use abi_stable::StableAbi;
use abi_stable::type_layout::TypeLayout;
use kvs_plugin_api::handshake::HandshakePrefix;
use kvs_plugin_api::native::{self, v1_1, v1_3, v1_4, v1_7};
use kvs_plugin_api::wasm_abi::{GUEST_EXPORTS, HOST_FUNCTIONS, HOST_MODULE, ValType};
use kvs_plugin_api::{API_MAJOR, Handshake};
use snapshot::{Snapshot, differences};

/// A released minor of major 1.
struct Released {
    minor: u16,
    /// The roots of the native types this minor added, or why it has none.
    native: Native,
}

enum Native {
    /// The minor's native roots: abi_stable checks what they reach when it loads a
    /// plug-in.
    Roots(&'static [&'static TypeLayout]),
    /// The minor added no native types.
    None(&'static str),
}

/// Every released minor: a new minor is one row, added when it is released.
const RELEASED: &[Released] = &[
    Released {
        minor: 0,
        // The root module (a prefix type, reached through its `PrefixRef`, as
        // abi_stable's library header checks it) and the handshake.
        native: Native::Roots(&[
            <native::PluginModRef as StableAbi>::LAYOUT,
            <Handshake as StableAbi>::LAYOUT,
        ]),
    },
    Released {
        minor: 1,
        native: Native::Roots(&[<v1_1::Module as StableAbi>::LAYOUT]),
    },
    Released {
        minor: 2,
        native: Native::None(
            "1.2 added no native types; a 1.2 plug-in exports 1.1's entry points \
             (see native-1.1.txt)",
        ),
    },
    Released {
        minor: 3,
        native: Native::Roots(&[<v1_3::Module as StableAbi>::LAYOUT]),
    },
    Released {
        minor: 4,
        // Exported as `KVS_PLUGIN_ENTRIES`, an `Entries` of this module (the host reads
        // the `Entries` header by hand: see `by_hand`).
        native: Native::Roots(&[<v1_4::Module as StableAbi>::LAYOUT]),
    },
    Released {
        minor: 5,
        native: Native::None(
            "1.5 added no native types (two error codes); a 1.5 plug-in exports 1.4's \
             entry points (see native-1.4.txt)",
        ),
    },
    Released {
        minor: 6,
        native: Native::None(
            "1.6 added no native types (transactions travel through 1.4's update entry \
             point as encoded bytes); a 1.6 plug-in exports 1.4's entry points (see \
             native-1.4.txt)",
        ),
    },
    Released {
        minor: 7,
        // 1.4's entry points with 1.7's store (1.4's and `commit`) handed to frontends.
        native: Native::Roots(&[<v1_7::Module as StableAbi>::LAYOUT]),
    },
    Released {
        minor: 8,
        native: Native::None(
            "1.8 added no native types (borrowing WASM HTTP handlers, a guest-side API); a \
             1.8 plug-in exports 1.7's entry points (see native-1.7.txt)",
        ),
    },
];

/// What the host reads without abi_stable's layout check: the handshake, by offset,
/// before anything else (1.0).
fn by_hand(minor: u16) -> Vec<(String, Vec<String>)> {
    if minor == 4 {
        // From 1.4 the host reads `KVS_PLUGIN_ENTRIES`'s first field, the layout of the
        // module that follows, before abi_stable checks that layout.
        type E = native::Entries<v1_4::Module>;
        return vec![(
            "offsets kvs_plugin_api::native::Entries (KVS_PLUGIN_ENTRIES, read from 1.4 on)"
                .to_string(),
            vec![format!(
                "offset {} size {}: `layout`; `module` at offset {}",
                std::mem::offset_of!(E, layout),
                size_of::<&'static TypeLayout>(),
                std::mem::offset_of!(E, module)
            )],
        )];
    }
    if minor != 0 {
        return Vec::new();
    }
    macro_rules! field {
        ($t:ty, $f:ident) => {{
            let t = std::mem::MaybeUninit::<$t>::uninit();
            // The field's size without reading it: the size of what a pointer to it
            // points to.
            fn size<T>(_: *const T) -> usize {
                std::mem::size_of::<T>()
            }
            // SAFETY: addr_of! on a field of an uninitialised value reads nothing.
            let size = size(unsafe { std::ptr::addr_of!((*t.as_ptr()).$f) });
            format!(
                "offset {} size {}: `{}`",
                std::mem::offset_of!($t, $f),
                size,
                stringify!($f)
            )
        }};
    }
    let sized =
        |name: &str, size: usize, align: usize| format!("{name}: size {size}; align {align}");
    vec![
        (
            "offsets kvs_plugin_api::handshake::HandshakePrefix (read by every host, any major)"
                .to_string(),
            vec![
                sized(
                    "HandshakePrefix",
                    size_of::<HandshakePrefix>(),
                    align_of::<HandshakePrefix>(),
                ),
                field!(HandshakePrefix, magic),
                field!(HandshakePrefix, api_major),
                field!(HandshakePrefix, api_minor),
            ],
        ),
        (
            "offsets kvs_plugin_api::handshake::Handshake (read whole once its version is checked)"
                .to_string(),
            vec![
                sized("Handshake", size_of::<Handshake>(), align_of::<Handshake>()),
                field!(Handshake, magic),
                field!(Handshake, api_major),
                field!(Handshake, api_minor),
                field!(Handshake, kind),
                field!(Handshake, name),
                field!(Handshake, version),
                field!(Handshake, description),
                field!(Handshake, capabilities),
            ],
        ),
    ]
}

fn native_snapshot(released: &Released) -> Option<Snapshot> {
    let Native::Roots(roots) = released.native else {
        return None;
    };
    let dump = layout::dump(roots);
    let mut snapshot = Snapshot {
        roots: dump.roots.clone(),
        ..Snapshot::default()
    };
    let rest = dump.types.keys().filter(|k| !dump.roots.contains(k));
    for name in dump.roots.iter().chain(rest) {
        snapshot.section(format!("type {name}"), dump.types[name].clone());
    }
    for (header, lines) in by_hand(released.minor) {
        snapshot.section(header, lines);
    }
    Some(snapshot)
}

fn types(ts: &[ValType]) -> String {
    let names: Vec<&str> = ts.iter().map(|t| t.name()).collect();
    format!("({})", names.join(", "))
}

/// What a guest of `minor` may import and must (or may) export.
fn wasm_snapshot(minor: u16) -> Snapshot {
    let mut snapshot = Snapshot::default();
    // From 1.4 a row's position is part of the contract (the direct calls' numbers).
    let position = |i: usize, what: &str| {
        if minor >= 4 {
            format!("; {what} {i}")
        } else {
            String::new()
        }
    };
    for (i, f) in HOST_FUNCTIONS.iter().enumerate() {
        if f.since_minor > minor {
            continue;
        }
        snapshot.section(
            format!("host function {}", f.name),
            vec![format!(
                "import {HOST_MODULE}::{}: {} -> {}; since 1.{}{}",
                f.name,
                types(f.params),
                types(f.results),
                f.since_minor,
                position(i, "op")
            )],
        );
    }
    for (i, e) in GUEST_EXPORTS.iter().enumerate() {
        if e.since_minor > minor {
            continue;
        }
        snapshot.section(
            format!("guest export {}", e.name),
            vec![format!(
                "export {}: {} -> {}; {} {}; since 1.{}{}",
                e.name,
                types(e.params),
                types(e.results),
                if e.required {
                    "required of"
                } else {
                    "optional for"
                },
                e.exporter.describe(),
                e.since_minor,
                position(i, "dispatched as")
            )],
        );
    }
    snapshot
}

fn frozen_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("frozen")
}

/// `1.N` of a minor of this major.
fn version(minor: u16) -> String {
    format!("{API_MAJOR}.{minor}")
}

/// The minor `KVS_FREEZE_MINOR` names (`1.N`), if set.
fn freeze_minor() -> Option<u16> {
    let value = std::env::var("KVS_FREEZE_MINOR").ok()?;
    let minor = value
        .strip_prefix(&format!("{API_MAJOR}."))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("KVS_FREEZE_MINOR={value}: expected {API_MAJOR}.N"));
    assert!(
        RELEASED.iter().any(|r| r.minor == minor),
        "KVS_FREEZE_MINOR={value}: {value} is not in RELEASED (plugin-api/tests/frozen.rs): \
         add its row first"
    );
    Some(minor)
}

/// Which contract a snapshot holds.
#[derive(Clone, Copy)]
enum Kind {
    Native,
    Wasm,
}

/// Checks one snapshot file (or writes it, if missing and `freeze` says so); the
/// failure, if any.
fn check(
    minor: u16,
    file: &str,
    kind: Kind,
    comment: &[String],
    now: &Snapshot,
    freeze: Option<u16>,
) -> Option<String> {
    let path = frozen_dir().join(file);
    let v = version(minor);
    let frozen = match std::fs::read_to_string(&path) {
        Ok(text) => {
            if freeze == Some(minor) {
                return Some(format!(
                    "KVS_FREEZE_MINOR={v}: frozen/{file} exists; a snapshot is never \
                     regenerated in place (plugin-api {v} is released: its contract does \
                     not change). Unset KVS_FREEZE_MINOR."
                ));
            }
            Snapshot::parse(&text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if freeze == Some(minor) {
                std::fs::create_dir_all(frozen_dir()).unwrap();
                std::fs::write(&path, now.text(comment)).unwrap();
                eprintln!("froze plugin-api {v}: wrote {}", path.display());
                return None;
            }
            return Some(format!(
                "plugin-api {v} is listed as released but has no snapshot frozen/{file}: \
                 freeze it once, from the code as released, with \
                 `KVS_FREEZE_MINOR={v} cargo test -p kvs-plugin-api --test frozen`"
            ));
        }
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    let diff = differences(&frozen, now);
    (!diff.is_empty()).then(|| {
        let next = RELEASED.iter().map(|r| r.minor).max().unwrap_or(0) + 1;
        let instead = match kind {
            Kind::Native => format!(
                "new native types go in the next minor's module `native::v1_{next}` (its \
                 `Module`, exported as `KVS_PLUGIN_ENTRIES`), beside the released ones"
            ),
            Kind::Wasm => format!(
                "a new host function or export, under a new name, in a new row of \
                 `kvs_plugin_api::wasm_abi` with since_minor {next}"
            ),
        };
        let what = match kind {
            Kind::Native => "native layout",
            Kind::Wasm => "WASM imports and exports",
        };
        format!(
            "plugin-api {v} changed, which is released and frozen ({what}, against \
             plugin-api/frozen/{file}):\n{diff}\
             A plug-in built against {v} no longer matches what a host expects of {v}. \
             Leave what {v} defined as it is and add the change to the next minor instead: \
             {instead}; see plugin-api/src/versioning.rs. Never regenerate a released \
             snapshot.\n"
        )
    })
}

#[test]
fn released_minors_are_frozen() {
    let freeze = freeze_minor();
    let mut failures = Vec::new();
    for released in RELEASED {
        let v = version(released.minor);
        if let Some(now) = native_snapshot(released) {
            let comment = [
                format!(
                    "plugin-api {v}, native: the abi_stable layouts of the types {v} added, \
                     and of every type they reach."
                ),
                "Frozen: written once by plugin-api/tests/frozen.rs (KVS_FREEZE_MINOR) and \
                 never regenerated; the test fails when the code no longer matches it."
                    .to_string(),
            ];
            let file = format!("native-{v}.txt");
            failures.extend(check(
                released.minor,
                &file,
                Kind::Native,
                &comment,
                &now,
                freeze,
            ));
        }
        let mut comment = vec![
            format!(
                "plugin-api {v}, WASM: the host functions a {v} guest may import and the \
                 exports a {v} host calls (from kvs_plugin_api::wasm_abi)."
            ),
            "Frozen: written once by plugin-api/tests/frozen.rs (KVS_FREEZE_MINOR) and never \
             regenerated; the test fails when the table no longer matches it."
                .to_string(),
        ];
        if let Native::None(why) = released.native {
            comment.push(format!("No native-{v}.txt: {why}."));
        }
        let file = format!("wasm-{v}.txt");
        let now = wasm_snapshot(released.minor);
        failures.extend(check(
            released.minor,
            &file,
            Kind::Wasm,
            &comment,
            &now,
            freeze,
        ));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn released_minors_are_listed_in_order() {
    let minors: Vec<u16> = RELEASED.iter().map(|r| r.minor).collect();
    let expected: Vec<u16> = (0..minors.len() as u16).collect();
    assert_eq!(
        minors, expected,
        "RELEASED lists every minor from 0, in order"
    );
    assert!(
        minors.last() <= Some(&kvs_plugin_api::API_MINOR),
        "RELEASED lists a minor newer than this crate's API_MINOR"
    );
}

/// The released crates the compat fixtures are built from (`compat/releases/`) and the
/// frozen layouts here name the same minors: a minor is released with both.
#[test]
fn every_released_crate_has_frozen_layouts() {
    let list = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../compat/releases/releases.toml"
    );
    // Outside kvs's tree (the packaged crate) there is no list to compare with.
    let Ok(text) = std::fs::read_to_string(list) else {
        return;
    };
    let packaged: Vec<u16> = text
        .lines()
        .filter_map(|l| l.split("minor = \"1.").nth(1))
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect();
    let frozen: Vec<u16> = RELEASED.iter().map(|r| r.minor).collect();
    assert_eq!(
        packaged, frozen,
        "compat/releases/releases.toml lists minors {packaged:?} but tests/frozen.rs's \
         RELEASED has {frozen:?}: a minor is released with its .crate and its layout \
         snapshots together (ARCHITECTURE.md, \"Adding a minor\")"
    );
}

#[test]
fn snapshots_round_trip() {
    for released in RELEASED {
        let snapshots = native_snapshot(released)
            .into_iter()
            .chain([wasm_snapshot(released.minor)]);
        for snapshot in snapshots {
            let parsed = Snapshot::parse(&snapshot.text(&["comment".to_string()]));
            assert_eq!(parsed, snapshot);
        }
    }
}

#[test]
fn a_difference_names_the_line() {
    let old = Snapshot::parse("root a\n\ntype a\n  x\n  y\n\ntype b\n  z\n");
    let new = Snapshot::parse("root a\n\ntype a\n  x\n  y2\n\ntype c\n  w\n");
    assert_eq!(
        differences(&old, &new),
        "type a:\n    - y\n    + y2\ntype b: - removed (or no longer reached)\n\
         type c: + added (newly reached)\n    + w\n"
    );
}
