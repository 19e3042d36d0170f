//! ResourceQuota (in progress).

use super::{Attributes, Context, Plugin};

pub struct ResourceQuota;

pub fn build(_ctx: &Context) -> Box<dyn Plugin> {
    Box::new(ResourceQuota)
}

impl Plugin for ResourceQuota {
    fn handles(&self, _a: &Attributes) -> bool {
        false
    }
}
