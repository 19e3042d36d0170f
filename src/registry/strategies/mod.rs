//! Per-kind strategies. Kinds with no rules of their own use `PLAIN`.

mod apps;
mod core;
mod rbac;
mod scheduling;
mod storage;

pub use apps::*;
pub use core::*;
pub use rbac::*;
pub use scheduling::*;
pub use storage::*;

use super::strategy::Strategy;

/// A kind with no defaulting or validation beyond object metadata.
pub struct Plain;
impl Strategy for Plain {}
pub static PLAIN: Plain = Plain;
