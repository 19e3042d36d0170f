//! Placeholder: this controller is being built (issue 7).

use super::runtime::Ctx;

pub fn start(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "replicaset::start", "not built yet");
    Ok(())
}

pub fn start_rc(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "replicaset::start_rc", "not built yet");
    Ok(())
}
