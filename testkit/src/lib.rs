//! Helpers shared by kvs's tests and benchmarks.
//!
//! * [`pg`]: a throwaway PostgreSQL server (initdb + pg_ctl on a free loopback port).

pub mod pg;
