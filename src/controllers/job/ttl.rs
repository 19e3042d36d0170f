//! Placeholder: the TTL-after-finished controller is being built.

use crate::controllers::runtime::Ctx;

pub fn start(_ctx: &Ctx) -> anyhow::Result<()> {
    Ok(())
}
