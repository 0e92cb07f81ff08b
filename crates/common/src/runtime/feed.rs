//! Following a container's change feed from a checkpoint, with a lease so that several
//! instances of a service share the work: one owner per (container, reader) at a time, the
//! checkpoint kept in the lease document and guarded by its ETag, and the lease taken over
//! when its owner stops renewing it. What an owner handled but had not checkpointed when it
//! died is handled again by the next owner: handlers are idempotent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{millis, now_ms};
use crate::config::ChangeFeedSettings;
use crate::store::{Checkpoint, Document, ETag, SharedStore, StoreError};

/// The container holding every service's leases (one per followed feed).
pub const LEASES: &str = "leases";

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Worth retrying later: the batch is read again from the same checkpoint.
    #[error("transient: {0}")]
    Transient(String),
}

/// What follows a feed: gets the changes in feed order, a batch at a time.
#[async_trait]
pub trait FeedHandler: Send + Sync + 'static {
    async fn handle(&self, changes: Vec<Document>) -> Result<(), FeedError>;
}

/// Wakes readers right after a commit in this process, and tells how fresh what they
/// maintain is. Several readers may share one signal (a view fed by two containers): a
/// commit counts as handled once every one of them has drained its feed after it.
#[derive(Clone)]
pub struct FeedSignal {
    inner: Arc<SignalState>,
}

impl Default for FeedSignal {
    fn default() -> Self {
        Self {
            inner: Arc::new(SignalState {
                commits: watch::channel(0).0,
                unhandled: Mutex::new(BTreeMap::new()),
                readers: Mutex::new(BTreeMap::new()),
                drained_at: Mutex::new(None),
            }),
        }
    }
}

struct SignalState {
    /// Counts the signalled commits; each reader watches it.
    commits: watch::Sender<u64>,
    /// When each commit not yet handled by every reader was signalled, by its number.
    unhandled: Mutex<BTreeMap<u64, Instant>>,
    /// Per reader, the number of the last commit it has handled.
    readers: Mutex<BTreeMap<String, u64>>,
    /// When every reader last had every signalled commit handled.
    drained_at: Mutex<Option<SystemTime>>,
}

impl FeedSignal {
    /// Something was committed that the readers should see.
    pub fn notify(&self) {
        let Ok(mut unhandled) = self.inner.unhandled.lock() else {
            return;
        };
        let mut number = 0;
        self.inner.commits.send_modify(|count| {
            *count = count.wrapping_add(1);
            number = *count;
        });
        unhandled.insert(number, Instant::now());
    }

    /// How long the oldest commit signalled in this process has waited for the readers;
    /// zero when all were handled.
    pub fn lag(&self) -> Duration {
        self.inner
            .unhandled
            .lock()
            .ok()
            .and_then(|unhandled| unhandled.values().next().map(Instant::elapsed))
            .unwrap_or_default()
    }

    /// When the readers last had every commit handled.
    pub fn drained_at(&self) -> Option<SystemTime> {
        self.inner.drained_at.lock().ok().and_then(|at| *at)
    }

    /// The number of the last commit signalled.
    fn current(&self) -> u64 {
        *self.inner.commits.borrow()
    }

    fn register(&self, reader: &str) {
        if let Ok(mut readers) = self.inner.readers.lock() {
            readers.entry(reader.to_owned()).or_insert(0);
        }
    }

    /// `reader` found its feed drained by a look that began after commit `seen`.
    fn drained(&self, reader: &str, seen: u64) {
        let handled_by_all = {
            let Ok(mut readers) = self.inner.readers.lock() else {
                return;
            };
            let entry = readers.entry(reader.to_owned()).or_insert(0);
            *entry = (*entry).max(seen);
            readers.values().copied().min().unwrap_or(seen)
        };
        let Ok(mut unhandled) = self.inner.unhandled.lock() else {
            return;
        };
        unhandled.retain(|number, _| *number > handled_by_all);
        if unhandled.is_empty()
            && let Ok(mut at) = self.inner.drained_at.lock()
        {
            *at = Some(SystemTime::now());
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseBody {
    kind: String,
    owner: String,
    expires_at_ms: i64,
    checkpoint: Option<String>,
}

struct Lease {
    id: String,
    etag: ETag,
    body: LeaseBody,
    renewed: Instant,
}

/// One reader of one container's change feed.
pub struct FeedReader {
    pub store: SharedStore,
    /// The container followed.
    pub container: &'static str,
    /// What reads it (`outbox-relay`, `product-view`): one lease and checkpoint each.
    pub reader: &'static str,
    /// This instance, as lease owner.
    pub owner: String,
    pub settings: ChangeFeedSettings,
    pub signal: FeedSignal,
    pub handler: Arc<dyn FeedHandler>,
}

impl FeedReader {
    fn lease_id(&self) -> String {
        format!("{}.{}", self.container, self.reader)
    }

    fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.settings.lease_seconds)
    }

    fn lease_body(&self, checkpoint: Option<String>) -> LeaseBody {
        LeaseBody {
            kind: "lease".to_owned(),
            owner: self.owner.clone(),
            expires_at_ms: now_ms().saturating_add(millis(self.lease_duration())),
            checkpoint,
        }
    }

    /// Takes the lease when it is free, expired or already ours.
    async fn acquire(&self) -> Result<Option<Lease>, StoreError> {
        let id = self.lease_id();
        let written = match self.store.read(LEASES, &id, &id).await? {
            None => {
                let body = self.lease_body(None);
                match self.store.create(LEASES, &id, &id, to_json(&body)?).await {
                    Ok(document) => Some((document.etag, body)),
                    Err(StoreError::Conflict) => None,
                    Err(other) => return Err(other),
                }
            }
            Some(document) => {
                let (current, etag) = document.into_model::<LeaseBody>()?;
                if current.owner != self.owner && current.expires_at_ms > now_ms() {
                    return Ok(None);
                }
                let body = self.lease_body(current.checkpoint);
                match self
                    .store
                    .replace(LEASES, &id, &id, to_json(&body)?, Some(&etag))
                    .await
                {
                    Ok(document) => Some((document.etag, body)),
                    Err(StoreError::PreconditionFailed | StoreError::NotFound) => None,
                    Err(other) => return Err(other),
                }
            }
        };
        Ok(written.map(|(etag, body)| {
            tracing::info!(lease = %id, owner = %self.owner, "change-feed lease taken");
            Lease {
                id,
                etag,
                body,
                renewed: Instant::now(),
            }
        }))
    }

    /// Writes the checkpoint and renews; false when the lease was lost to another owner.
    async fn save(
        &self,
        lease: &mut Lease,
        checkpoint: Option<String>,
    ) -> Result<bool, StoreError> {
        let body = self.lease_body(checkpoint);
        match self
            .store
            .replace(
                LEASES,
                &lease.id,
                &lease.id,
                to_json(&body)?,
                Some(&lease.etag),
            )
            .await
        {
            Ok(document) => {
                lease.etag = document.etag;
                lease.body = body;
                lease.renewed = Instant::now();
                Ok(true)
            }
            Err(StoreError::PreconditionFailed | StoreError::NotFound) => {
                tracing::warn!(lease = %lease.id, "change-feed lease lost to another owner");
                Ok(false)
            }
            Err(other) => Err(other),
        }
    }

    fn renewal_due(&self, lease: &Lease) -> bool {
        lease.renewed.elapsed() >= self.lease_duration() / 2
    }

    /// One look at the feed as the lease owner: handles what is new and checkpoints it.
    /// Returns whether more may be waiting right away.
    async fn step(&self, lease: &mut Option<Lease>) -> Result<bool, StepError> {
        if lease.is_none() {
            *lease = self.acquire().await?;
        }
        let Some(held) = lease.as_mut() else {
            return Ok(false);
        };
        if self.renewal_due(held) && !self.save(held, held.body.checkpoint.clone()).await? {
            *lease = None;
            return Ok(false);
        }
        // Every commit signalled up to now is in what the feed read below returns.
        let seen = self.signal.current();
        let since = held.body.checkpoint.clone().map(Checkpoint);
        let batch = self
            .store
            .changes(self.container, since.as_ref(), self.settings.batch_size)
            .await?;
        if batch.documents.is_empty() {
            // Nothing to checkpoint: an idle reader writes only to renew its lease.
            self.signal.drained(&self.lease_id(), seen);
            return Ok(false);
        }
        let full = batch.documents.len() >= self.settings.batch_size;
        self.handler
            .handle(batch.documents)
            .await
            .map_err(StepError::Handler)?;
        if !self.save(held, Some(batch.checkpoint.0)).await? {
            *lease = None;
            return Ok(false);
        }
        if !full {
            self.signal.drained(&self.lease_id(), seen);
        }
        Ok(true)
    }

    /// Follows the feed until `shutdown`; drains what was committed before it stops.
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut lease: Option<Lease> = None;
            let poll = Duration::from_millis(self.settings.poll_interval_ms);
            let mut failures = 0u32;
            let mut commits = self.signal.inner.commits.subscribe();
            self.signal.register(&self.lease_id());
            while !*shutdown.borrow() {
                // Taken before the look: a commit during it wakes the next wait at once.
                commits.borrow_and_update();
                let pause = match self.step(&mut lease).await {
                    Ok(true) => {
                        failures = 0;
                        continue;
                    }
                    Ok(false) => {
                        failures = 0;
                        match &lease {
                            Some(_) => poll,
                            // Not ours: look again before the owner's lease could run out.
                            None => poll.min(self.lease_duration() / 2),
                        }
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(%error, container = self.container, reader = self.reader, "change-feed reader failed; will retry");
                        // 100 ms, doubling, never longer than the poll interval.
                        Duration::from_millis(100u64 << failures.min(8)).min(poll)
                    }
                };
                tokio::select! {
                    _ = commits.changed() => {}
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
            }
            // Drain what this process committed before the stop, if the lease is ours.
            for _ in 0..100 {
                match self.step(&mut lease).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(error) => {
                        tracing::warn!(%error, container = self.container, "could not drain the change feed at shutdown");
                        break;
                    }
                }
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Handler(FeedError),
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::Serialization(e.into()))
}
