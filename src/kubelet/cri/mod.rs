//! The real runtime: pods run as CRI sandboxes and containers (containerd).

pub mod client;
