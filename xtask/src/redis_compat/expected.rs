//! Redis tests kvs is expected to fail, and why: each follows from kvs's Redis dialect
//! (README, "Redis dialect"), never from a bug. A failure not listed here is reported as
//! unexpected and makes `cargo xtask redis-compat` fail.

const UNSERVED: &str = "uses a command kvs does not serve (no atomic read-modify-write: \
    SETNX, GETSET, GETDEL, SETRANGE, SETBIT, RENAME, COPY, ...; no expiry: GETEX; no LCS), \
    which kvs refuses saying why";
const SET_OPTIONS: &str = "uses SET options (NX, XX, GET, EX, PX, KEEPTTL): no compare-and-set, \
    no expiry";
const BULK: &str = "lists or drops keys in bulk (FLUSHDB, KEYS, RANDOMKEY) or counts keys \
    other tests left: kvs does not list or drop keys in bulk";
const TYPES: &str = "uses a data type kvs does not have (sets, lists, blocking pops): kvs \
    stores strings";
const BIG_VALUE: &str = "writes a 4 MB value: over kvs's value limit (limits.max_value_bytes, \
    1 MiB by default)";
const INFO: &str = "expects INFO sections kvs does not report (cpu, commandstats, errorstats): \
    kvs reports server, clients, memory, stats and keyspace";

/// Per test file: test names (a trailing `*` matches any name with that start) and why
/// they fail.
const EXPECTED: &[(&str, &[&str], &str)] = &[
    (
        "unit/type/string",
        &["Very big payload in GET/SET"],
        BIG_VALUE,
    ),
    (
        "unit/type/string",
        &[
            "SET 10000 numeric keys and access all them in reverse order",
            "DBSIZE should be 10000 now",
            "MGET",
            "MGET against non existing key",
        ],
        BULK,
    ),
    ("unit/type/string", &["MGET against non-string key"], TYPES),
    (
        "unit/type/string",
        &[
            "SETNX*",
            "GETEX*",
            "GETDEL*",
            "GETSET*",
            "MSETNX*",
            "SETBIT*",
            "GETBIT*",
            "SETRANGE*",
            "GETRANGE*",
            "LCS*",
        ],
        UNSERVED,
    ),
    ("unit/type/string", &["Extended SET*"], SET_OPTIONS),
    (
        "unit/keyspace",
        &[
            "KEYS*",
            "DBSIZE",
            "DEL all keys*",
            "RANDOMKEY*",
            "Regression for pattern matching*",
        ],
        BULK,
    ),
    (
        "unit/keyspace",
        &["RENAME*", "RENAMENX*", "COPY*"],
        UNSERVED,
    ),
    (
        "unit/protocol",
        &[
            "raw protocol response*",
            "Regression for a crash with blocking ops and pipelining",
        ],
        TYPES,
    ),
    (
        "unit/protocol",
        &[
            "test large number of args",
            "test argument rewriting - issue 9598",
        ],
        BULK,
    ),
    ("unit/info-command", &["info command with*"], INFO),
];

/// Why `test` of `file` is expected to fail, if it is.
pub fn why(file: &str, test: &str) -> Option<&'static str> {
    EXPECTED
        .iter()
        .filter(|(f, _, _)| *f == file)
        .find(|(_, names, _)| {
            names.iter().any(|n| match n.strip_suffix('*') {
                Some(prefix) => test.starts_with(prefix),
                None => test == *n,
            })
        })
        .map(|(_, _, why)| *why)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_and_prefixes_match() {
        assert_eq!(super::why("unit/type/string", "MGET"), Some(super::BULK));
        assert_eq!(
            super::why("unit/type/string", "MGET against non-string key"),
            Some(super::TYPES)
        );
        assert_eq!(
            super::why("unit/type/string", "SETNX target key missing"),
            Some(super::UNSERVED)
        );
        assert_eq!(super::why("unit/type/string", "SET and GET an item"), None);
        assert_eq!(super::why("unit/keyspace", "MGET"), None);
    }
}
