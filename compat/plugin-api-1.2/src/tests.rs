//! Tests of promises the contract makes that the compiler does not check.

use crate::{API_MAJOR, Handshake, PluginKind, handshake::MAGIC};

#[test]
fn export_symbol_matches_abi_stable() {
    // export_plugin! spells out the name abi_stable's loader looks for; an abi_stable
    // upgrade that changes it must fail here, not at load time in the field.
    assert_eq!(
        abi_stable::library::ROOT_MODULE_LOADER_NAME,
        "_1as_0lib_1header_0root_bmodule_bloader"
    );
}

#[test]
fn handshake_prefix_offsets_are_frozen() {
    // magic, api_major and api_minor must sit at these offsets in every major version,
    // so any host can read any plug-in's version.
    assert_eq!(std::mem::offset_of!(Handshake, magic), 0);
    assert_eq!(std::mem::offset_of!(Handshake, api_major), 8);
    assert_eq!(std::mem::offset_of!(Handshake, api_minor), 10);
    assert_eq!(API_MAJOR, 1);
    use crate::handshake::HandshakePrefix;
    assert_eq!(std::mem::offset_of!(HandshakePrefix, magic), 0);
    assert_eq!(std::mem::offset_of!(HandshakePrefix, api_major), 8);
    assert_eq!(std::mem::offset_of!(HandshakePrefix, api_minor), 10);
}

#[test]
fn handshake_validation() {
    let ok = Handshake::new(PluginKind::LOGGER, "file-2", "1.0.0", "d", &[]);
    assert_eq!(ok.magic, MAGIC);
    assert!(ok.validate().is_ok());
    for bad in ["", "File", "9lives", "a b", "a/b"] {
        let h = Handshake::new(PluginKind::LOGGER, bad, "1.0.0", "d", &[]);
        assert!(h.validate().is_err(), "{bad:?} accepted");
    }
    let h = Handshake::new(PluginKind(9), "x", "1.0.0", "d", &[]);
    assert!(h.validate().is_err());
}
