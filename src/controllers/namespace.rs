//! Placeholder: this controller is being built (issue 7).

use super::runtime::Ctx;

pub fn start(_ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!(controller = "namespace::start", "not built yet");
    Ok(())
}
