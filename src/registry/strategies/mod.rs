//! Per-kind strategies. Kinds with no rules of their own use `PLAIN`.

mod apps;
mod core;

pub use apps::*;
pub use core::*;

use super::strategy::Strategy;

/// A kind with no defaulting or validation beyond object metadata.
pub struct Plain;
impl Strategy for Plain {}
pub static PLAIN: Plain = Plain;
