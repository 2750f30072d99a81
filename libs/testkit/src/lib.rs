//! Helpers shared by kvs's tests and benchmarks.
//!
//! * [`pg`]: a throwaway PostgreSQL server (initdb + pg_ctl on a free loopback port).
//! * [`etcd`]: a throwaway etcd cluster of N members on free loopback ports.
//! * [`netns`]: a second host in a network namespace, and partitions from it.
//! * [`linearizable`]: a linearizability checker for register histories.
//! * [`crash`]: every on-disk state a power loss could leave, from a record of disk
//!   operations (the file and WASM loggers' crash-state tests).

pub mod crash;
pub mod etcd;
pub mod linearizable;
pub mod netns;
pub mod pg;
