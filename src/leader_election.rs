//! Leader election through a coordination.k8s.io/v1 Lease, with the semantics of
//! client-go's `tools/leaderelection` as kube-scheduler and kube-controller-manager use it:
//!
//! - a candidate creates the Lease when there is none (so a fresh cluster gets a leader at
//!   once), and otherwise takes it over only when it is free (empty holderIdentity, as a
//!   released Lease is) or expired: the record has not changed for leaseDurationSeconds as
//!   this process observed it (upstream's rule, immune to clock skew) or, on the record's
//!   own clock, `renewTime + leaseDurationSeconds` lies in the past (so a restarted
//!   cluster whose old leader is long dead does not wait a lease duration);
//! - every write is an update carrying the resourceVersion read, so of two racing
//!   candidates exactly one wins (the other gets a 409 Conflict);
//! - candidates retry every retryPeriod (with upstream's jitter factor 1.2); the leader
//!   renews every retryPeriod and gives up leading when it could not renew for
//!   renewDeadline — the caller then exits, as upstream's components do;
//! - on a clean shutdown the leader releases the Lease (empty holder, 1 s duration:
//!   upstream's ReleaseOnCancel, which kube-scheduler sets), so a successor need not wait.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

/// Upstream's `--leader-elect*` flags (component-base's LeaderElectionConfiguration).
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderElectionArgs {
    /// Elect a leader through a Lease before doing any work (for replicated components);
    /// on unless `--leader-elect=false` (or the config file says so).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub leader_elect: Option<bool>,
    /// How long a standby waits after the last observed renewal before taking the lease over.
    #[arg(long, value_parser = crate::apiserver::parse_go_duration)]
    pub leader_elect_lease_duration: Option<Duration>,
    /// How long the leader keeps retrying a renewal before it stops leading.
    #[arg(long, value_parser = crate::apiserver::parse_go_duration)]
    pub leader_elect_renew_deadline: Option<Duration>,
    /// How long candidates wait between attempts to acquire or renew.
    #[arg(long, value_parser = crate::apiserver::parse_go_duration)]
    pub leader_elect_retry_period: Option<Duration>,
    /// The kind of lock object; only `leases` (upstream's default) is supported.
    #[arg(long)]
    pub leader_elect_resource_lock: Option<String>,
    /// The name of the Lease (default: the component's name).
    #[arg(long)]
    pub leader_elect_resource_name: Option<String>,
    /// The namespace of the Lease.
    #[arg(long)]
    pub leader_elect_resource_namespace: Option<String>,
}

/// The resolved settings (upstream's defaults: 15 s, 10 s, 2 s, `kube-system`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub enabled: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub resource_lock: String,
    pub namespace: String,
    pub name: String,
}

impl Config {
    pub fn defaults(component: &str) -> Config {
        Config {
            enabled: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            resource_lock: "leases".into(),
            namespace: "kube-system".into(),
            name: component.into(),
        }
    }

    /// Flags given on the command line override what is already here.
    pub fn override_with(&mut self, args: &LeaderElectionArgs) {
        if let Some(enabled) = args.leader_elect {
            self.enabled = enabled;
        }
        let set = |slot: &mut Duration, v: Option<Duration>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut self.lease_duration, args.leader_elect_lease_duration);
        set(&mut self.renew_deadline, args.leader_elect_renew_deadline);
        set(&mut self.retry_period, args.leader_elect_retry_period);
        for (slot, v) in [
            (&mut self.resource_lock, &args.leader_elect_resource_lock),
            (&mut self.name, &args.leader_elect_resource_name),
            (&mut self.namespace, &args.leader_elect_resource_namespace),
        ] {
            if let Some(v) = v {
                slot.clone_from(v);
            }
        }
    }

    /// Upstream's checks: leaseDuration > renewDeadline > 1.2 × retryPeriod > 0.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.retry_period.is_zero() {
            bail!("--leader-elect-retry-period must be greater than zero");
        }
        if self.lease_duration <= self.renew_deadline {
            bail!("--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline");
        }
        if self.renew_deadline.as_secs_f64() <= JITTER * self.retry_period.as_secs_f64() {
            bail!("--leader-elect-renew-deadline must be greater than 1.2 × --leader-elect-retry-period");
        }
        if self.resource_lock != "leases" {
            bail!("--leader-elect-resource-lock={:?} is not supported (only \"leases\")", self.resource_lock);
        }
        if self.name.is_empty() || self.namespace.is_empty() {
            bail!("the leader election resource name and namespace must not be empty");
        }
        Ok(())
    }
}

/// Upstream's JitterFactor.
const JITTER: f64 = 1.2;

/// This candidate's identity: `<hostname>_<uuid>`, as upstream's components.
pub fn identity() -> String {
    format!("{}_{}", crate::certs::hostname(), uuid::Uuid::new_v4())
}

/// The Lease last read and when this process first saw it in that state.
struct Observed {
    lease: Lease,
    at: Instant,
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: Config,
    pub identity: String,
    observed: Mutex<Option<Observed>>,
    leading: AtomicBool,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn spec(lease: &Lease) -> LeaseSpec {
    lease.spec.clone().unwrap_or_default()
}

impl LeaderElector {
    pub fn new(client: Client, config: Config) -> anyhow::Result<LeaderElector> {
        config.validate()?;
        Ok(LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            identity: identity(),
            config,
            observed: Mutex::new(None),
            leading: AtomicBool::new(false),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// `leader_election_master_status{name=…}` in the Prometheus text format.
    pub fn render_metric(&self) -> String {
        format!(
            "# HELP leader_election_master_status Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease.\n\
             # TYPE leader_election_master_status gauge\n\
             leader_election_master_status{{name=\"{}\"}} {}\n",
            self.config.name,
            u8::from(self.is_leader())
        )
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Option<Observed>> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember the Lease as read; the observation time moves only when its record changed.
    fn observe(&self, lease: Lease) {
        let mut observed = self.observed();
        let same = observed.as_ref().is_some_and(|o| o.lease.spec == lease.spec);
        match observed.as_mut() {
            Some(o) if same => o.lease = lease,
            _ => *observed = Some(Observed { lease, at: Instant::now() }),
        }
    }

    /// Whether the Lease as last observed is held by someone else and still valid.
    fn held_by_other(&self, lease: &Lease) -> bool {
        let s = spec(lease);
        let holder = s.holder_identity.unwrap_or_default();
        if holder.is_empty() || holder == self.identity {
            return false;
        }
        let duration = Duration::from_secs(s.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let observed_valid = self.observed().as_ref().is_some_and(|o| o.at + duration > Instant::now());
        let renew_valid = s.renew_time.as_ref().or(s.acquire_time.as_ref()).is_none_or(|t| {
            let ends = t.0.as_millisecond() as i128 + duration.as_millis() as i128;
            ends >= Timestamp::now().as_millisecond() as i128
        });
        observed_valid && renew_valid
    }

    /// One attempt to acquire or renew (upstream's tryAcquireOrRenew): true when this
    /// process holds the Lease afterwards.
    async fn try_acquire_or_renew(&self) -> anyhow::Result<bool> {
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let current = match self.api.get_opt(&self.config.name).await.context("reading the lease")? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(now()),
                        renew_time: Some(now()),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.observe(created);
                        Ok(true)
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e).context("creating the lease"),
                };
            }
        };
        self.observe(current.clone());
        if self.held_by_other(&current) {
            return Ok(false);
        }
        let old = spec(&current);
        let mine = old.holder_identity.as_deref() == Some(self.identity.as_str());
        let mut next = current.clone();
        next.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: if mine { old.acquire_time.clone() } else { Some(now()) },
            renew_time: Some(now()),
            lease_transitions: Some(old.lease_transitions.unwrap_or(0) + i32::from(!mine)),
            ..old
        });
        // the resourceVersion read travels with the update: a concurrent writer wins or we do
        match self.api.replace(&self.config.name, &PostParams::default(), &next).await {
            Ok(updated) => {
                self.observe(updated);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e).context("updating the lease"),
        }
    }

    fn jittered(&self) -> Duration {
        self.config.retry_period.mul_f64(1.0 + fastrand::f64() * JITTER)
    }

    /// Wait until this process holds the Lease.
    pub async fn acquire(&self) {
        tracing::info!(lease = %format!("{}/{}", self.config.namespace, self.config.name), identity = %self.identity, "attempting to acquire the leader lease");
        loop {
            let attempt = tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => {
                    self.leading.store(true, Ordering::Relaxed);
                    tracing::info!(identity = %self.identity, "successfully acquired the lease");
                    return;
                }
                Ok(Ok(false)) => {
                    let holder = self.observed().as_ref().and_then(|o| spec(&o.lease).holder_identity);
                    tracing::debug!(holder = ?holder, "the lease is held by another candidate");
                }
                Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "error acquiring the lease"),
                Err(_) => tracing::warn!("acquiring the lease timed out"),
            }
            tokio::time::sleep(self.jittered()).await;
        }
    }

    /// Renew every retryPeriod while leading; returns when a renewal could not be made
    /// for renewDeadline (leadership is lost).
    pub async fn renew_until_lost(&self) {
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let deadline = tokio::time::Instant::now() + self.config.renew_deadline;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => break,
                    Ok(Ok(false)) => tracing::warn!("the lease was taken by another candidate"),
                    Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "error renewing the lease"),
                    Err(_) => {}
                }
                if tokio::time::Instant::now() + self.config.retry_period >= deadline {
                    self.leading.store(false, Ordering::Relaxed);
                    tracing::error!(identity = %self.identity, "failed to renew the lease within the renew deadline");
                    return;
                }
                tokio::time::sleep(self.config.retry_period).await;
            }
        }
    }

    /// Acquire, then run `work` while renewing. An error when leadership is lost (the
    /// component should exit non-zero, as upstream's do); `work`'s end otherwise.
    pub async fn lead<F: std::future::Future<Output = ()>>(&self, work: F) -> anyhow::Result<()> {
        self.acquire().await;
        tokio::select! {
            () = work => Ok(()),
            () = self.renew_until_lost() => bail!("leader election lost"),
        }
    }

    /// A component's main loop: `work` runs (as leader, when an elector is given) until it
    /// ends, leadership is lost, or SIGTERM/SIGINT arrives — then the Lease is given up so
    /// a standby takes over at once. With election an error from `work` is logged (and
    /// `lead` returns, so the process exits); without election it is returned.
    pub async fn run_until_shutdown(
        elector: Option<&LeaderElector>,
        work: impl std::future::Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        let work = async {
            match elector {
                Some(e) => e.lead(async { work.await.unwrap_or_else(|err| tracing::error!("{err:#}")) }).await,
                None => work.await,
            }
        };
        tokio::select! {
            result = work => result,
            _ = crate::cli::shutdown_signal() => {
                tracing::info!("shutting down");
                if let Some(e) = elector {
                    e.release().await;
                }
                Ok(())
            }
        }
    }

    /// Give the Lease up if this process holds it (upstream's ReleaseOnCancel).
    pub async fn release(&self) {
        if !self.leading.swap(false, Ordering::Relaxed) {
            return;
        }
        let Some(mut lease) = self.observed().as_ref().map(|o| o.lease.clone()) else { return };
        let old = spec(&lease);
        if old.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            ..old
        });
        let released = tokio::time::timeout(
            Duration::from_secs(5),
            self.api.replace(&self.config.name, &PostParams::default(), &lease),
        )
        .await;
        match released {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the leader lease"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation_as_upstream() {
        let mut c = Config::defaults("kube-scheduler");
        assert!(c.validate().is_ok());
        assert_eq!((c.namespace.as_str(), c.name.as_str()), ("kube-system", "kube-scheduler"));
        c.renew_deadline = Duration::from_secs(15);
        assert!(c.validate().is_err(), "lease duration must exceed the renew deadline");
        let mut c = Config::defaults("x");
        c.retry_period = Duration::from_secs(9);
        assert!(c.validate().is_err(), "renew deadline must exceed 1.2 × retry period");
        c.enabled = false;
        assert!(c.validate().is_ok(), "nothing is checked when off");
    }

    #[test]
    fn identity_is_host_underscore_uuid() {
        let id = identity();
        let (host, uuid) = id.rsplit_once('_').expect("an underscore");
        assert!(!host.is_empty());
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{id}");
    }
}
