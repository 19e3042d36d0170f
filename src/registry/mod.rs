//! The resource table: every kind the server serves, with upstream's scope, verbs,
//! short names, etcd key prefix, strategy and printer columns. The handlers are generic
//! over this table; adding a kind is a table entry plus a strategy.

pub mod allocator;
pub mod encryption;
pub mod events;
pub mod filter;
pub mod keys;
pub mod meta;
pub mod namespaces;
pub mod printers;
pub mod rawjson;
pub mod resources;
pub mod rest;
pub mod selectors;
pub mod store;
pub mod strategies;
pub mod strategy;
pub mod typed;
pub mod validation;

pub use resources::{ResourceDef, all_resources, builtin, find_resource};
