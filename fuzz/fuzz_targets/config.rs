//! Config parsing (`kvs_config`, libs/config): `config.toml` as written
//! (`RawConfig::parse`), resolved with and without command-line overrides
//! (`Config::resolve`), and each plug-in's own table handed on as TOML text
//! (`Config::plugin_config`) — what `kvs` runs at start and on every reload, where a
//! panic would take the service down with the reload that asked for it.
//!
//! Checks: no panic on any text; a config that resolves holds the invariants the host
//! relies on (limits and writer sizes at least 1, frontends named once — none is allowed: a
//! reload may add them — rate limits
//! within their bounds, a finite burst of at least 1); each plug-in's table, as handed
//! on, parses back to a table that serializes to the same text; `--repair-log` puts
//! `repair = true` into the chosen logger's table and leaves the others alone.
#![no_main]

use kvs_config::{Config, Overrides, RawConfig};
use libfuzzer_sys::fuzz_target;

fn check(config: &Config) {
    assert!(config.limits.max_key_bytes >= 1);
    assert!(config.max_batch >= 1 && config.queue_capacity >= 1);
    let mut names: Vec<&String> = config.frontends.iter().collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        config.frontends.len(),
        "a frontend named twice"
    );
    assert!(config.rate_limit.validate().is_ok());
    let burst = config.rate_limit.burst_or_default();
    assert!(burst.is_finite() && burst >= 1.0, "burst {burst}");
    let _ = config.rate_limit.describe();
    for name in config.plugin_tables.keys() {
        let text = config.plugin_config(name);
        let table: toml::Table = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("plug-in table {name:?} as handed on: {e}\n{text}"));
        let again = toml::to_string(&table).expect("a parsed table serializes");
        assert_eq!(
            text, again,
            "plug-in table {name:?} changed on a round trip"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = RawConfig::parse(text) else {
        return;
    };
    if let Ok(config) = Config::resolve(raw, Overrides::default()) {
        check(&config);
    }
    // The same file under `kvs --logger fuzzlog --frontend rest --frontend resp
    // --repair-log`.
    let raw = RawConfig::parse(text).expect("parsed once, parses again");
    let over = Overrides {
        plugins_dir: Some("/nonexistent".into()),
        logger: Some("fuzzlog".into()),
        frontends: vec!["rest".into(), "resp".into()],
        repair_log: true,
    };
    let others: Vec<(String, String)> = raw
        .plugins
        .keys()
        .filter(|name| *name != "fuzzlog")
        .map(|name| (name.clone(), toml::to_string(&raw.plugins[name]).unwrap()))
        .collect();
    if let Ok(config) = Config::resolve(raw, over) {
        check(&config);
        assert_eq!(config.logger, "fuzzlog");
        let table: toml::Table = toml::from_str(&config.plugin_config("fuzzlog")).unwrap();
        assert_eq!(table.get("repair"), Some(&toml::Value::Boolean(true)));
        for (name, text) in others {
            assert_eq!(config.plugin_config(&name), text, "{name:?} changed");
        }
    }
});
