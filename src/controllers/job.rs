//! Placeholder: this controller is being built (issue 7).

use super::runtime::Ctx;

pub fn start(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "job::start", "not built yet");
    Ok(())
}

pub fn start_cronjob(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "job::start_cronjob", "not built yet");
    Ok(())
}

pub fn start_ttl_after_finished(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "job::start_ttl_after_finished", "not built yet");
    Ok(())
}
