//! Upstream's default plug-ins, one file each. A plug-in is a unit struct implementing
//! `FilterPlugin` and/or `ScorePlugin`; `Profile::default_plugins` lists them.

mod balanced_allocation;
mod image_locality;
mod inter_pod_affinity;
mod node_affinity;
mod node_name;
mod node_ports;
mod node_resources_fit;
mod node_unschedulable;
mod pod_topology_spread;
mod taint_toleration;
mod volume_binding;
mod volume_restrictions;
mod volume_zone;

pub use crate::label_selector::selector_matches;
pub use balanced_allocation::BalancedAllocation;
pub use image_locality::ImageLocality;
pub use inter_pod_affinity::{InterPodAffinity, has_pod_affinity, has_required_anti_affinity};
pub use node_affinity::{NodeAffinity, required_matches};
pub use node_name::NodeName;
pub use node_ports::NodePorts;
pub use node_resources_fit::{NodeResourcesFit, Strategy};
pub use node_unschedulable::NodeUnschedulable;
pub use pod_topology_spread::{Defaults, PodTopologySpread};
pub use taint_toleration::{TaintToleration, tolerates};
pub use volume_binding::{
    Plan as VolumePlan, SELECTED_NODE, VolumeBinding, assumed as assumed_volumes, unbound_claims,
};
pub use volume_restrictions::VolumeRestrictions;
pub use volume_zone::VolumeZone;

#[cfg(test)]
pub mod testing;
