//! Images as imagePullPolicy asks, with upstream's reasons: ErrImageNeverPull,
//! ErrImagePull, then ImagePullBackOff while a failed image waits (10 s doubling to 5 min).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1::{ImageSpec, ImageStatusRequest, PullImageRequest};
use k8s_openapi::api::core::v1::Container;

use super::backoff::Backoff;
use super::client::Cri;

/// Why a container cannot start for want of its image: (reason, message).
pub type PullError = (String, String);

/// Something worth an event, in the order it happened: (warning?, reason, message).
pub type Note = (bool, &'static str, String);

#[derive(Default)]
pub struct Puller {
    backoff: HashMap<String, Backoff>,
}

/// IfNotPresent unless the image is untagged or `:latest` (the API server defaults this,
/// but a pod from an older client may lack it).
fn policy(c: &Container, image: &str) -> String {
    if let Some(p) = &c.image_pull_policy {
        return p.clone();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let tagged = last.contains(':') && !last.ends_with(":latest");
    if tagged || image.contains('@') { "IfNotPresent".into() } else { "Always".into() }
}

impl Puller {
    /// The image's reference (its id) ready to run, or why not; `notes` collects events.
    pub async fn ensure(&mut self, cri: &Cri, c: &Container, notes: &mut Vec<Note>) -> Result<String, PullError> {
        let image = c.image.clone().unwrap_or_default();
        let spec = ImageSpec { image: image.clone(), ..Default::default() };
        let present = match cri
            .image
            .clone()
            .image_status(ImageStatusRequest { image: Some(spec.clone()), verbose: false })
            .await
        {
            Ok(reply) => reply.into_inner().image.map(|i| i.id),
            Err(e) => return Err(("ErrImagePull".into(), format!("checking image {image:?}: {}", e.message()))),
        };
        let policy = policy(c, &image);
        match (present, policy.as_str()) {
            // Always with the image on the node: no registry is reachable on these machines, so
            // the local copy (imported at start) stands in for the pull upstream would make
            (Some(id), _) => {
                notes.push((false, "Pulled", format!("Container image {image:?} already present on machine")));
                Ok(id)
            }
            (None, "Never") => {
                let message = format!("Container image {image:?} is not present with pull policy of Never");
                notes.push((true, "ErrImageNeverPull", message.clone()));
                Err(("ErrImageNeverPull".into(), message))
            }
            (None, _) => self.pull(cri, &image, spec, notes).await,
        }
    }

    async fn pull(
        &mut self,
        cri: &Cri,
        image: &str,
        spec: ImageSpec,
        notes: &mut Vec<Note>,
    ) -> Result<String, PullError> {
        if let Some(b) = self.backoff.get(image)
            && b.waiting(Instant::now())
        {
            let message = format!("Back-off pulling image {image:?}");
            notes.push((false, "BackOff", message.clone()));
            return Err(("ImagePullBackOff".into(), message));
        }
        notes.push((false, "Pulling", format!("Pulling image {image:?}")));
        let started = Instant::now();
        let request = PullImageRequest { image: Some(spec), auth: None, sandbox_config: None };
        match cri.image.clone().pull_image(request).await {
            Ok(reply) => {
                self.backoff.remove(image);
                let took = started.elapsed();
                notes.push((false, "Pulled", format!("Successfully pulled image {image:?} in {took:?}")));
                Ok(reply.into_inner().image_ref)
            }
            Err(e) => {
                self.backoff.entry(image.to_string()).or_default().failed(Instant::now(), Duration::ZERO);
                let message = format!("failed to pull and unpack image {image:?}: {}", e.message());
                notes.push((true, "Failed", format!("Failed to pull image {image:?}: {}", e.message())));
                notes.push((true, "Failed", "Error: ErrImagePull".into()));
                Err(("ErrImagePull".into(), message))
            }
        }
    }
}
