//! LimitRanger (in progress).

use super::{Attributes, Context, Plugin};

pub struct LimitRanger;

pub fn build(_ctx: &Context) -> Box<dyn Plugin> {
    Box::new(LimitRanger)
}

impl Plugin for LimitRanger {
    fn handles(&self, _a: &Attributes) -> bool {
        false
    }
}
