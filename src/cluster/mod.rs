//! Several daemons on one fleet: what they share through etcd.

pub mod etcd;
