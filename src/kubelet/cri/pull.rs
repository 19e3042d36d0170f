//! Images as imagePullPolicy asks, with upstream's reasons: ErrImageNeverPull,
//! ErrImagePull, then ImagePullBackOff while a failed image waits (10 s doubling to 5 min).
//! A pull uses the pod's imagePullSecrets (`credentials.rs`): each matching credential
//! in turn, or none when none matches.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1::{AuthConfig, ImageSpec, ImageStatusRequest, PullImageRequest};
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::{Api, Client, ResourceExt};

use super::backoff::Backoff;
use super::client::Cri;
use super::credentials::Keyring;

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
    pub async fn ensure(
        &mut self,
        who: (&Cri, &Client, &Pod),
        c: &Container,
        notes: &mut Vec<Note>,
    ) -> Result<String, PullError> {
        let (cri, client, pod) = who;
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
            (None, _) => {
                let keyring = pull_secrets(client, pod, notes).await;
                self.pull(cri, &image, spec, &keyring, notes).await
            }
        }
    }

    async fn pull(
        &mut self,
        cri: &Cri,
        image: &str,
        spec: ImageSpec,
        keyring: &Keyring,
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
        match pull_with(cri, spec, keyring.lookup(image)).await {
            Ok(image_ref) => {
                self.backoff.remove(image);
                let took = started.elapsed();
                notes.push((false, "Pulled", format!("Successfully pulled image {image:?} in {took:?}")));
                Ok(image_ref)
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

/// PullImage with each credential in turn until one works (anonymously when there are
/// none); the last refusal when none does.
async fn pull_with(cri: &Cri, spec: ImageSpec, credentials: Vec<AuthConfig>) -> Result<String, tonic::Status> {
    let attempts: Vec<Option<AuthConfig>> = match credentials.is_empty() {
        true => vec![None],
        false => credentials.into_iter().map(Some).collect(),
    };
    let mut last = tonic::Status::unknown("no pull attempted");
    for auth in attempts {
        let server = auth.as_ref().map(|a| a.server_address.clone()).unwrap_or_default();
        let request = PullImageRequest { image: Some(spec.clone()), auth, sandbox_config: None };
        match cri.image.clone().pull_image(request).await {
            Ok(reply) => return Ok(reply.into_inner().image_ref),
            Err(e) => {
                tracing::debug!(image = %spec.image, credentials_for = %server, error = %e.message(), "pull refused");
                last = e;
            }
        }
    }
    Err(last)
}

/// The pod's imagePullSecrets as a keyring; those that cannot be read are left out with
/// upstream's warning.
async fn pull_secrets(client: &Client, pod: &Pod, notes: &mut Vec<Note>) -> Keyring {
    let names: Vec<String> =
        pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()).map(|r| r.name.clone()).collect();
    if names.is_empty() {
        return Keyring::default();
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for name in names {
        match api.get(&name).await {
            Ok(secret) => found.push(secret),
            Err(e) => {
                tracing::debug!(pod = %pod.name_any(), secret = %name, error = %e, "reading an image pull secret");
                missing.push(name);
            }
        }
    }
    if !missing.is_empty() {
        let message = format!(
            "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
            missing.join(", ")
        );
        notes.push((true, "FailedToRetrieveImagePullSecret", message));
    }
    Keyring::from_secrets(&found)
}
