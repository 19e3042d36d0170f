//! Quantities (in progress).
