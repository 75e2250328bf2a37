//! Several daemons on one fleet: what they share through etcd.
//!
//! - `etcd`: the client of etcd's v3 JSON gateway;
//! - `keys`: the key layout of a fleet under `[cluster] key_prefix`;
//! - `placement`: rendezvous hashing of nodes over live members.

pub mod etcd;
pub mod keys;
pub mod placement;
