//! Integration tests of the kvs host, on real compiled plug-ins.
//!
//! They need the plug-ins built and staged: run them with `cargo xtask test`, which
//! builds the workspace first (plain `cargo test` does not build cdylibs).
//!
//! * `atomic`: conditions, counters and expiry (redis-py on both Redis frontends, REST
//!   `If-Match`), each checked again after a restart.
//! * `loading`: discovery, handshake refusals, duplicates, side-by-side plug-ins, panics.
//! * `cluster`: kvs nodes sharing one etcd cluster (the `etcd` logger): crashes, member
//!   stops, quorum loss, linearizable reads; partitions (a node in a network namespace)
//!   and a nemesis schedule of partitions, pauses and kills, histories checked;
//!   transactions (`MSETNX`, `EXPIRE ... NX`) all or none across nodes.
//! * `compat`: plug-ins built against every released plugin-api 1.x (the `compat/` fixtures,
//!   native and WASM) working end to end in a real `kvs`; 1.1 ones logging through it.
//! * `context`: request contexts from rest, grpc, wasm-rest and a third party's
//!   frontend arriving at the host's request hook, whose refusal is the answer.
//! * `write_path`: the store and writer through the host library with fixture loggers.
//! * `conformance`: `kvs plugins check` on shipped, template and broken plug-ins.
//! * `grpc`: the grpc frontend called by tonic clients.
//! * `postgres`: the postgres logger against a throwaway PostgreSQL server
//!   (`kvs_testkit::pg`).
//! * `wasm`: `.wasm` plug-ins: end to end, mixed with native ones, hostile guests.
//! * `wasm_abi`: guests in C and AssemblyScript, written from docs/wasm-abi.md alone,
//!   through `kvs plugins check` and a real kvs.
//! * `resp`: the Redis frontends (native `resp`, WASM `wasm-resp`) under redis-cli,
//!   redis-benchmark, redis-py and malformed input; a trapping stream guest.
//! * `redis_diff`: random command sequences sent to a real `redis-server` and to both
//!   Redis frontends, replies compared byte for byte except where kvs's dialect says.
//! * `disk`: the file logger on a full disk (a tmpfs the test mounts): 507, nothing
//!   acknowledged lost, recovery once space is freed.
//! * `overload`: 10,000 half-sent Redis commands and 10,000 slow HTTP headers holding
//!   every connection slot, and a well-behaved client served at its normal latency.
//! * `live`: `kvs reload` under a steady load of every kind of client: limits, access
//!   rules, frontends and the logger replaced while serving; broken offers refused.
//! * `backup`: `kvs backup` under a steady write load, checked record by record and
//!   restored; damaged snapshots refused; `kvs migrate` between file, postgres and
//!   wasm-log under load, every acknowledged write found after a restart.
//! * `authoring`: `kvs plugins new` for each kind of plug-in, outside the checkout:
//!   generated, built by cargo, checked, served.
//! * `process`: a real `kvs` process with the `file` logger and `rest` frontend, driven
//!   by a real HTTP client.

mod util;

mod authoring;
mod backup;
mod wasm;
mod wasm_abi;

mod atomic;
mod cluster;
mod compat;
mod conformance;
mod context;
mod disk;
mod grpc;
mod live;
mod loading;
mod observability;
mod overload;
mod postgres;
mod power_loss;
mod process;
mod redis_diff;
mod resp;
mod security;
mod write_path;
