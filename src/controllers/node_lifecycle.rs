//! Placeholder: this controller is being built (issue 7).

use super::runtime::Ctx;

pub fn start(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "node_lifecycle::start", "not built yet");
    Ok(())
}

pub fn start_ipam(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "node_lifecycle::start_ipam", "not built yet");
    Ok(())
}

pub fn start_podgc(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "node_lifecycle::start_podgc", "not built yet");
    Ok(())
}
