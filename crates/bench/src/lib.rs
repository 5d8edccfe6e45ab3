//! What `wharf-bench` shares with the test suite: the reliability suite of issue 18
//! ([`replicas`]), which `crates/cli/tests/replicas.rs` runs small and
//! `wharf-bench replicas` runs at size.

pub mod replicas;
