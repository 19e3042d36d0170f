//! What every controller is built from: shared informers (`informer.rs`), rate-limited
//! work queues (`queue.rs`), the event recorder (`events.rs`), claiming objects through
//! ownerReferences (`claim.rs`), expectations of a controller's own writes
//! (`expectations.rs`), and `Ctx`, which hands
//! them out and runs each controller's workers once the informers have synced:
//!
//! ```ignore
//! pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
//!     let queue = ctx.queue("replicaset");
//!     let sets = ctx.informer::<ReplicaSet>();
//!     let q = queue.clone();
//!     sets.on_change(move |ev| q.add(key_of(ev.object().as_ref())));
//!     let this = Arc::new(Controller { sets, ... });
//!     ctx.run_syncs(queue, 5, this, |c, key| async move { c.sync(&key).await });
//!     Ok(())
//! }
//! ```
//!
//! A sync that fails is retried with the queue's per-key backoff; one that succeeds
//! resets it. Metrics per controller: queue depth, adds, retries, sync durations, errors.

pub mod claim;
pub mod client;
pub mod discovery;
pub mod events;
pub mod expectations;
pub mod informer;
pub mod queue;

use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use kube::Client;

pub use events::Recorder;
pub use informer::{Event, Informer, Informers, Kind, key_of, split_key};
pub use queue::WorkQueue;

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Upstream's workqueue duration buckets: 1 µs to 10 s by factors of ten... plus finer
/// steps where syncs usually fall (1 ms – 1 s).
const BUCKETS: [f64; 12] = [1e-5, 1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 1.0, 10.0];

#[derive(Default)]
struct SyncStats {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
    errors: u64,
}

/// One controller's queue and sync statistics.
struct Registered {
    queue: Arc<WorkQueue>,
    stats: Arc<Mutex<SyncStats>>,
}

#[derive(Default)]
pub struct Metrics {
    controllers: Mutex<Vec<Registered>>,
}

impl Metrics {
    /// The Prometheus text of every controller's queue and syncs (workqueue_* as
    /// client-go's names, the sync histogram and errors per controller).
    pub fn render(&self) -> String {
        let all = self.controllers.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE workqueue_depth gauge");
        for r in all.iter() {
            let _ = writeln!(out, "workqueue_depth{{name=\"{}\"}} {}", r.queue.name, r.queue.len());
        }
        let _ = writeln!(out, "# TYPE workqueue_adds_total counter");
        for r in all.iter() {
            let _ = writeln!(
                out,
                "workqueue_adds_total{{name=\"{}\"}} {}",
                r.queue.name,
                r.queue.adds.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE workqueue_retries_total counter");
        for r in all.iter() {
            let retries = r.queue.retries.load(Ordering::Relaxed);
            let _ = writeln!(out, "workqueue_retries_total{{name=\"{}\"}} {retries}", r.queue.name);
        }
        let _ = writeln!(
            out,
            "# HELP controller_sync_duration_seconds How long each sync of one key took, per controller."
        );
        let _ = writeln!(out, "# TYPE controller_sync_duration_seconds histogram");
        for r in all.iter() {
            let s = r.stats.lock().unwrap_or_else(|e| e.into_inner());
            let name = r.queue.name;
            for (bound, n) in BUCKETS.iter().zip(s.counts) {
                let _ = writeln!(
                    out,
                    "controller_sync_duration_seconds_bucket{{controller=\"{name}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "controller_sync_duration_seconds_bucket{{controller=\"{name}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "controller_sync_duration_seconds_sum{{controller=\"{name}\"}} {}", s.sum);
            let _ = writeln!(out, "controller_sync_duration_seconds_count{{controller=\"{name}\"}} {}", s.count);
        }
        let _ = writeln!(out, "# TYPE controller_sync_errors_total counter");
        for r in all.iter() {
            let errors = r.stats.lock().unwrap_or_else(|e| e.into_inner()).errors;
            let _ = writeln!(out, "controller_sync_errors_total{{controller=\"{}\"}} {errors}", r.queue.name);
        }
        client::render(&mut out);
        out
    }
}

/// Whether an API call failed because the object is not there (404).
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an API call lost an optimistic-concurrency race or met an existing name (409).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Settings the controllers share (from the command line).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `--concurrent-*-syncs`: workers per controller, by controller name (default 5).
    pub workers: std::collections::HashMap<String, usize>,
    pub node_monitor_grace_period: Duration,
    pub node_monitor_period: Duration,
    /// Set when node CIDRs are to be allocated (`--allocate-node-cidrs`).
    pub cluster_cidr: Option<ipnet::IpNet>,
    pub node_cidr_mask_size: u8,
    pub local_path_dir: std::path::PathBuf,
}

/// Handed to each controller's `start`. `client` is the controller's own (with
/// `--use-service-account-credentials`, its service account's); the informers,
/// metrics and workers are shared by all.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub informers: Arc<Informers>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    workers: Arc<Mutex<Vec<Work>>>,
}

impl Ctx {
    pub fn new(client: Client, settings: Settings) -> Ctx {
        Ctx {
            informers: Arc::new(Informers::new(client.clone())),
            client,
            metrics: Arc::default(),
            settings: Arc::new(settings),
            workers: Arc::default(),
        }
    }

    /// The same context with another client for the controller's writes.
    pub fn with_client(&self, client: Client) -> Ctx {
        Ctx { client, ..self.clone() }
    }

    pub fn informer<K: Kind>(&self) -> Arc<Informer<K>> {
        self.informers.get::<K>()
    }

    /// A recorder whose events say they come from `component` (e.g. `replicaset-controller`).
    pub fn recorder(&self, component: &'static str) -> Recorder {
        Recorder::new(self.client.clone(), component)
    }

    /// A work queue whose depth and syncs are reported under `name`.
    pub fn queue(&self, name: &'static str) -> Arc<WorkQueue> {
        Arc::new(WorkQueue::new(name))
    }

    /// Workers for `queue`: `--concurrent-<name>-syncs` of them (else `default`), started
    /// once every informer has synced. Each takes a key, runs `sync`, and retries it
    /// with backoff if it fails.
    pub fn run_workers<F, Fut>(&self, queue: Arc<WorkQueue>, default: usize, sync: F)
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stats = Arc::new(Mutex::new(SyncStats::default()));
        let registered = Registered { queue: queue.clone(), stats: stats.clone() };
        self.metrics.controllers.lock().unwrap_or_else(|e| e.into_inner()).push(registered);
        let n = self.settings.workers.get(queue.name).copied().unwrap_or(default).max(1);
        let sync = Arc::new(sync);
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..n {
            let (queue, stats, sync) = (queue.clone(), stats.clone(), sync.clone());
            workers.push(Box::pin(worker(queue, stats, sync)));
        }
    }

    /// A periodic pass (node monitoring, pod GC): `pass` every `period` once the
    /// informers have synced, its durations and errors reported under `name`.
    pub fn run_loop<F, Fut>(&self, name: &'static str, period: Duration, pass: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stats = Arc::new(Mutex::new(SyncStats::default()));
        let registered = Registered { queue: Arc::new(WorkQueue::new(name)), stats: stats.clone() };
        self.metrics.controllers.lock().unwrap_or_else(|e| e.into_inner()).push(registered);
        let work = async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let started = Instant::now();
                let result = pass().await;
                record(&stats, started, result.is_err());
                if let Err(e) = result {
                    tracing::warn!(controller = name, error = %format!("{e:#}"), "periodic pass failed");
                }
            }
        };
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).push(Box::pin(work));
    }

    /// `run_workers` for a controller object shared by its workers: each key is handed
    /// to `sync(controller, key)`.
    pub fn run_syncs<C, F, Fut>(&self, queue: Arc<WorkQueue>, default: usize, controller: Arc<C>, sync: F)
    where
        C: Send + Sync + 'static,
        F: Fn(Arc<C>, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.run_workers(queue, default, move |key| sync(controller.clone(), key));
    }

    /// Start the informers, wait for them to sync, then run every worker.
    pub async fn run(&self) {
        self.informers.start();
        self.informers.wait_synced().await;
        tracing::info!("caches synced; controllers running");
        let workers: Vec<Work> = self.workers.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        futures::future::join_all(workers.into_iter().map(tokio::spawn)).await;
    }
}

fn record(stats: &Mutex<SyncStats>, started: Instant, failed: bool) {
    let took = started.elapsed().as_secs_f64();
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    s.count += 1;
    s.sum += took;
    for (i, bound) in BUCKETS.iter().enumerate() {
        if took <= *bound {
            s.counts[i] += 1;
        }
    }
    if failed {
        s.errors += 1;
    }
}

async fn worker<F, Fut>(queue: Arc<WorkQueue>, stats: Arc<Mutex<SyncStats>>, sync: Arc<F>)
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    loop {
        let (key, _waited) = queue.get().await;
        let started = Instant::now();
        // a panicking sync is a failed sync: the worker lives on and the key is retried
        let result = std::panic::AssertUnwindSafe(sync(key.clone()))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the sync panicked")));
        record(&stats, started, result.is_err());
        match result {
            Ok(()) => queue.forget(&key),
            Err(e) => {
                tracing::info!(controller = queue.name, key, error = %format!("{e:#}"), "sync failed; retrying with backoff");
                queue.add_rate_limited(key.clone());
            }
        }
        queue.done(&key);
    }
}
