//! Placeholder: this controller is being built (issue 7).

use super::runtime::Ctx;

pub fn start(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "endpoints::start", "not built yet");
    Ok(())
}

pub fn start_slices(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "endpoints::start_slices", "not built yet");
    Ok(())
}
