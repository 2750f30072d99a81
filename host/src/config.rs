//! Configuration: the TOML file, `KVS_*` environment and flags, resolved into one value.
//! The types and their checks live in the `kvs-config` crate (libs/config), so they can
//! be fuzzed without the host; this module is where the host's code finds them.

pub use kvs_config::{
    ClusterConfig, Config, Overrides, RawConfig, RawLimits, RawWriter, Reads, default_plugins_dir,
};
