//! Placeholder: this controller is being built (issue 7).

use super::runtime::Ctx;

pub fn start_binder(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "volume::start_binder", "not built yet");
    Ok(())
}

pub fn start_local_path(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "volume::start_local_path", "not built yet");
    Ok(())
}
