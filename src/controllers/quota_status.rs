//! Quota usage (in progress).
pub async fn run(_ctx: crate::admission::Context) {}
