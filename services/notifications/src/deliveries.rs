//! Webhook deliveries. Every event a subscription wants becomes a message in the store
//! (container `messages`, partition = message id) before the bus message is settled; from
//! there it is sent by its endpoint's lane: each endpoint has its own queue and its own
//! attempts in flight, so a slow endpoint delays no other. A failed attempt is recorded and
//! the message is due again on the retry schedule; the scan of due messages sends it then,
//! on whichever instance gets there first (a message being sent is held for a lease, so a
//! sender that died lets go of it and nothing is lost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bus::CloudEvent;
use common::clock::now_ms;
use common::outbound::breaker::{self, Admission};
use common::outbound::{Breakers, resilient, targets};
use common::store::{Comparison, Document, ETag, Query, QueryScope, SharedStore, StoreError};
use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// An endpoint's rate, on the standard clock (the default one calibrates at first use).
type EndpointLimiter =
    RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;
use rand::Rng;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use crate::domain::filter::wants;
use crate::domain::message::{Attempt, Message, MessageStatus};
use crate::domain::schedule::{AfterFailure, RetrySchedule, retry_after_ms};
use crate::domain::signature::signature_header;
use crate::domain::subscription::{Subscription, health_after};
use crate::measure::WebhookMetrics;
use crate::settings::WebhookSettings;
use crate::subscriptions::{SubscriptionError, Subscriptions};

pub const MESSAGES: &str = "messages";
/// Due messages claimed per endpoint per scan.
const SCAN_BATCH: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("message {0} was not found")]
    NotFound(String),
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store's `kind` of a message in `status`: pending messages are found by it.
pub fn kind_of(status: MessageStatus) -> &'static str {
    match status {
        MessageStatus::Pending => "message-pending",
        MessageStatus::Delivered => "message-delivered",
        MessageStatus::Failed => "message-failed",
    }
}

fn to_body(message: &Message) -> Result<Value, StoreError> {
    let mut body =
        serde_json::to_value(message).map_err(|e| StoreError::Serialization(e.into()))?;
    if let Some(fields) = body.as_object_mut() {
        fields.insert("kind".into(), Value::String(kind_of(message.status).into()));
    }
    Ok(body)
}

/// A message handed to a lane, with the ETag it was claimed under.
struct Job {
    message: Message,
    etag: ETag,
}

/// An endpoint's queue; its task sends what comes in.
struct Lane {
    sender: mpsc::Sender<Job>,
    ordered: bool,
    rate_limit: Option<u32>,
}

struct Inner {
    store: SharedStore,
    subscriptions: Subscriptions,
    settings: WebhookSettings,
    schedule: RetrySchedule,
    http: common::outbound::LazyClient,
    lanes: Mutex<HashMap<String, Lane>>,
    /// Wakes the scan of due messages.
    wake: Notify,
    /// The earliest retry this instance scheduled and has not scanned for (Unix ms).
    next_due: AtomicI64,
    /// Turns true when the service stops (lanes holding a retry let go).
    stopping: watch::Sender<bool>,
    /// Send within the call that made or claimed the message, not from a lane (a custom
    /// handler: between invocations nothing may run).
    inline: bool,
    metrics: WebhookMetrics,
    /// The service's circuit breakers, one per endpoint origin.
    breakers: Breakers,
}

#[derive(Clone)]
pub struct Deliveries {
    inner: Arc<Inner>,
}

/// A message's answer to an attempt.
struct Outcome {
    attempt: Attempt,
    retry_after_ms: Option<u64>,
    reason: String,
}

impl Deliveries {
    pub fn new(
        store: SharedStore,
        subscriptions: Subscriptions,
        settings: WebhookSettings,
        inline: bool,
        metrics: WebhookMetrics,
        breakers: Breakers,
    ) -> anyhow::Result<Self> {
        let http = targets::lazy_client(
            Duration::from_millis(settings.timeout_ms),
            settings.allow_private_targets,
        );
        let schedule = RetrySchedule {
            pauses_ms: settings.retry_schedule_ms.clone(),
            jitter_percent: settings.jitter_percent,
            retry_after_max_ms: settings.retry_after_max_ms,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                subscriptions,
                settings,
                schedule,
                http,
                lanes: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                next_due: AtomicI64::new(i64::MAX),
                stopping: watch::channel(false).0,
                inline,
                metrics,
                breakers,
            }),
        })
    }

    fn lease_until(&self, now: i64) -> i64 {
        now.saturating_add(self.inner.settings.lease_ms())
    }

    /// The endpoint's queue, opened (with its task) on first use or when its ordering or
    /// rate changed.
    fn lane(&self, subscription: &Subscription) -> mpsc::Sender<Job> {
        let Ok(mut lanes) = self.inner.lanes.lock() else {
            // A poisoned map: a sender to nowhere leaves messages to the scan.
            return mpsc::channel(1).0;
        };
        if let Some(lane) = lanes.get(&subscription.id)
            && lane.ordered == subscription.ordered
            && lane.rate_limit == subscription.rate_limit
            && !lane.sender.is_closed()
        {
            return lane.sender.clone();
        }
        let (sender, receiver) = mpsc::channel(self.inner.settings.queue_per_endpoint);
        let in_flight = if subscription.ordered {
            1
        } else {
            self.inner.settings.max_in_flight_per_endpoint
        };
        let limiter = subscription
            .rate_limit
            .and_then(std::num::NonZeroU32::new)
            .map(|rate| {
                Arc::new(EndpointLimiter::direct_with_clock(
                    Quota::per_second(rate),
                    MonotonicClock,
                ))
            });
        tokio::spawn(self.clone().run_lane(
            subscription.id.clone(),
            receiver,
            in_flight,
            subscription.ordered,
            limiter,
        ));
        lanes.insert(
            subscription.id.clone(),
            Lane {
                sender: sender.clone(),
                ordered: subscription.ordered,
                rate_limit: subscription.rate_limit,
            },
        );
        sender
    }

    /// Stores a message for every subscription that wants `event` (once: the message id
    /// comes from the subscription and the event) and hands each to its endpoint's lane.
    /// Returns how many are new.
    pub async fn enqueue(&self, event: &CloudEvent) -> Result<usize, DeliveryError> {
        let subscriptions = self.inner.subscriptions.current().await?;
        let wanting: Vec<&Subscription> = subscriptions
            .iter()
            .filter(|s| wants(&s.event_types, &event.event_type))
            .collect();
        if wanting.is_empty() {
            return Ok(0);
        }
        let body = serde_json::to_value(event).map_err(|e| StoreError::Serialization(e.into()))?;
        let stored = wanting.into_iter().map(|subscription| {
            let body = body.clone();
            async move {
                let now = now_ms();
                let mut message =
                    Message::new(&subscription.id, &event.id, &event.event_type, body, now);
                // Sent from here at once when the lane has room; else the scan takes it.
                let permit = if subscription.is_active() && !self.inner.inline {
                    self.lane(subscription).try_reserve_owned().ok()
                } else {
                    None
                };
                let inline = self.inner.inline && subscription.is_active();
                if permit.is_some() || inline {
                    message.next_attempt_at = self.lease_until(now);
                }
                match self
                    .inner
                    .store
                    .create(MESSAGES, &message.id, &message.id, to_body(&message)?)
                    .await
                {
                    Ok(document) => {
                        let job = Job {
                            message,
                            etag: document.etag,
                        };
                        match permit {
                            Some(permit) => {
                                permit.send(job);
                            }
                            None if inline => {
                                self.attempt(job).await;
                            }
                            None => self.inner.wake.notify_one(),
                        }
                        Ok(1)
                    }
                    // The event came before: its message exists, and is on its way.
                    Err(StoreError::Conflict) => Ok(0),
                    Err(other) => Err(DeliveryError::Store(other)),
                }
            }
        });
        let mut new = 0;
        for result in futures::future::join_all(stored).await {
            new += result?;
        }
        Ok(new)
    }

    async fn run_lane(
        self,
        subscription_id: String,
        mut receiver: mpsc::Receiver<Job>,
        in_flight: usize,
        ordered: bool,
        limiter: Option<Arc<EndpointLimiter>>,
    ) {
        let slots = Arc::new(Semaphore::new(in_flight));
        while let Some(job) = receiver.recv().await {
            if let Some(limiter) = &limiter {
                limiter.until_ready().await;
            }
            if ordered {
                self.send_in_order(job).await;
                continue;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let lane = self.clone();
            tokio::spawn(async move {
                lane.attempt(job).await;
                drop(slot);
            });
        }
        tracing::debug!(subscription = %subscription_id, "lane closed");
    }

    /// Sends a message of an ordered subscription, waiting out its retries here so that
    /// nothing after it goes first.
    async fn send_in_order(&self, mut job: Job) {
        loop {
            match self.attempt(job).await {
                Some((held, retry_at)) => {
                    job = held;
                    let wait = u64::try_from(retry_at - now_ms()).unwrap_or(0);
                    let mut stop = self.inner.stopping.subscribe();
                    if *stop.borrow() {
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                        _ = stop.changed() => return,
                    }
                }
                None => return,
            }
        }
    }

    /// One attempt of a job's message, recorded. For an ordered subscription a message due
    /// again is handed back (held by this lane until its retry) with its retry time.
    #[tracing::instrument(name = "webhook.attempt", skip_all, fields(message = %job.message.id, subscription = %job.message.subscription_id))]
    async fn attempt(&self, job: Job) -> Option<(Job, i64)> {
        let Job { mut message, etag } = job;
        let subscription = match self
            .inner
            .subscriptions
            .find(&message.subscription_id)
            .await
        {
            Ok(subscription) => subscription,
            Err(SubscriptionError::NotFound(_)) => {
                message.status = MessageStatus::Failed;
                message.updated_at = now_ms();
                self.save(&message, &etag, "the subscription was deleted")
                    .await;
                return None;
            }
            Err(error) => {
                // The store is failing: the message stays held and is picked up again when
                // its lease ends.
                tracing::warn!(%error, "the subscription could not be read");
                return None;
            }
        };
        if !subscription.is_active() {
            // Paused or disabled meanwhile: due again, for when it is resumed.
            message.next_attempt_at = now_ms();
            self.save(&message, &etag, "").await;
            return None;
        }
        // An endpoint that keeps failing is left alone while its circuit is open: the
        // message waits, with no attempt spent. Ordered lanes already send one at a time and
        // keep their order by holding the message, so they do not defer.
        let target = url::Url::parse(&subscription.url)
            .ok()
            .map(|url| breaker::target_of(&url));
        if !subscription.ordered
            && let Some(target) = &target
            && let Admission::Refused { retry_in } = self.inner.breakers.admit(target)
        {
            let at = now_ms().saturating_add(i64::try_from(retry_in.as_millis()).unwrap_or(0));
            message.next_attempt_at = at;
            self.inner.next_due.fetch_min(at, Ordering::SeqCst);
            self.inner.wake.notify_one();
            self.save(&message, &etag, "").await;
            return None;
        }
        let outcome = self.send(&subscription, &message).await;
        if let Some(target) = &target {
            let transient = outcome.attempt.status_code.is_none_or(|status| {
                reqwest::StatusCode::from_u16(status).is_ok_and(resilient::is_transient)
            });
            if outcome.attempt.succeeded || !transient {
                self.inner.breakers.succeeded(target);
            } else {
                self.inner.breakers.failed(target);
            }
        }
        let now = now_ms();
        let succeeded = outcome.attempt.succeeded;
        let manual = message.manual;
        message.manual = false;
        let mut attempt = outcome.attempt;
        self.inner.metrics.attempt(&subscription.id, &attempt);
        if manual {
            attempt.trigger = "manual".into();
        }
        message.record(attempt);
        let mut held_until = None;
        if succeeded {
            message.status = MessageStatus::Delivered;
        } else {
            let spread = rand::rng().random_range(-1.0..=1.0);
            match self.inner.schedule.after_failure(
                message.round_attempts,
                now,
                spread,
                outcome.retry_after_ms,
            ) {
                AfterFailure::RetryAt(at) if subscription.ordered => {
                    // Held by this lane until then, and a while after in case it dies.
                    message.next_attempt_at = at.saturating_add(self.inner.settings.lease_ms());
                    held_until = Some(at);
                }
                AfterFailure::RetryAt(at) => {
                    message.next_attempt_at = at;
                    self.inner.next_due.fetch_min(at, Ordering::SeqCst);
                    self.inner.wake.notify_one();
                }
                AfterFailure::Fail => {
                    tracing::warn!(reason = %outcome.reason, "webhook message failed after its last attempt");
                    message.status = MessageStatus::Failed;
                }
            }
        }
        let saved = self.save(&message, &etag, &outcome.reason).await;
        let health = health_after(
            subscription.failing_since,
            succeeded,
            now,
            i64::try_from(self.inner.settings.disable_after_failing_ms).unwrap_or(i64::MAX),
        );
        if let Err(error) = self
            .inner
            .subscriptions
            .record_health(&subscription.id, health, &outcome.reason)
            .await
        {
            tracing::warn!(%error, "the endpoint's health could not be recorded");
        }
        match (held_until, saved) {
            (Some(at), Some(etag)) => Some((Job { message, etag }, at)),
            _ => None,
        }
    }

    /// Writes the message back; `None` when it changed meanwhile (retried by hand, say),
    /// which wins.
    async fn save(&self, message: &Message, etag: &ETag, reason: &str) -> Option<ETag> {
        let body = match to_body(message) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "a message could not be serialized");
                return None;
            }
        };
        match self
            .inner
            .store
            .replace(MESSAGES, &message.id, &message.id, body, Some(etag))
            .await
        {
            Ok(document) => Some(document.etag),
            Err(StoreError::PreconditionFailed | StoreError::NotFound) => None,
            Err(error) => {
                // Held until its lease ends, then sent again: at least once.
                tracing::warn!(%error, %reason, "an attempt could not be recorded");
                None
            }
        }
    }

    /// One POST of the message to the endpoint, signed for every secret that signs now.
    async fn send(&self, subscription: &Subscription, message: &Message) -> Outcome {
        let started = Instant::now();
        let at = now_ms();
        let failed =
            |excerpt: String, status_code: Option<u16>, retry_after_ms: Option<u64>| Outcome {
                reason: excerpt.clone(),
                attempt: Attempt {
                    at,
                    status_code,
                    latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    excerpt,
                    succeeded: false,
                    trigger: "scheduled".into(),
                },
                retry_after_ms,
            };
        if let Err(error) =
            targets::check_url(&subscription.url, self.inner.settings.allow_private_targets)
        {
            return failed(format!("url {error}"), None, None);
        }
        let body = match serde_json::to_vec(&message.event) {
            Ok(body) => body,
            Err(error) => {
                return failed(
                    format!("the event could not be written: {error}"),
                    None,
                    None,
                );
            }
        };
        let timestamp = at / 1000;
        let secrets = subscription.signing_secrets(at);
        let signature = match signature_header(&secrets, &message.id, timestamp, &body) {
            Ok(signature) => signature,
            Err(error) => return failed(error.to_string(), None, None),
        };
        let http = match self.inner.http.get() {
            Ok(http) => http,
            Err(error) => return failed(format!("no HTTP client: {error}"), None, None),
        };
        let sent = http
            .post(&subscription.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return failed(
                    format!("timed out after {} ms", self.inner.settings.timeout_ms),
                    None,
                    None,
                );
            }
            Err(error) => {
                return failed(format!("not reached: {}", error_chain(&error)), None, None);
            }
        };
        let status = response.status();
        let retry_after = if matches!(status.as_u16(), 429 | 503) {
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after_ms(v, at))
        } else {
            None
        };
        let excerpt = targets::excerpt(response, self.inner.settings.response_excerpt_bytes).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if status.is_success() {
            return Outcome {
                reason: String::new(),
                attempt: Attempt {
                    at,
                    status_code: Some(status.as_u16()),
                    latency_ms,
                    excerpt,
                    succeeded: true,
                    trigger: "scheduled".into(),
                },
                retry_after_ms: None,
            };
        }
        let mut outcome = failed(excerpt, Some(status.as_u16()), retry_after);
        outcome.attempt.latency_ms = latency_ms;
        outcome.reason = format!("answered {status}");
        outcome
    }

    /// Claims the due messages of every active subscription and hands them to their lanes,
    /// until `stop`. Idle, it sleeps until a retry scheduled here is due, something changed
    /// here, or `poll_interval_ms` passed (another instance's messages).
    pub async fn run_scan(self, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.inner.settings.poll_interval_ms);
        let changes = self.inner.subscriptions.changes();
        loop {
            if *stop.borrow() {
                self.inner.stopping.send_replace(true);
                return;
            }
            self.inner.next_due.store(i64::MAX, Ordering::SeqCst);
            let more = match self.scan().await {
                Ok(more) => more,
                Err(error) => {
                    tracing::warn!(%error, "due webhook messages could not be scanned");
                    false
                }
            };
            if more {
                continue;
            }
            let next_due = self.inner.next_due.load(Ordering::SeqCst);
            let wait = if next_due == i64::MAX {
                poll
            } else {
                Duration::from_millis(u64::try_from(next_due - now_ms()).unwrap_or(0)).min(poll)
            };
            tokio::select! {
                _ = stop.changed() => {}
                () = self.inner.wake.notified() => {}
                () = changes.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass over the active subscriptions; true when some had more due than taken.
    async fn scan(&self) -> Result<bool, DeliveryError> {
        let subscriptions = self.inner.subscriptions.current().await?;
        let mut more = false;
        for subscription in subscriptions.iter().filter(|s| s.is_active()) {
            if self.inner.inline {
                more |= self.scan_inline(subscription).await?;
                continue;
            }
            let lane = self.lane(subscription);
            let room = lane.capacity().min(SCAN_BATCH);
            if room == 0 {
                continue;
            }
            let now = now_ms();
            let query = due(subscription, now, room);
            let page = self.inner.store.query(MESSAGES, &query).await?;
            more |= page.items.len() == room && page.continuation.is_some();
            for document in page.items {
                let Ok(permit) = lane.clone().try_reserve_owned() else {
                    break;
                };
                if let Some(job) = self.claim(document, now).await? {
                    permit.send(job);
                }
            }
        }
        Ok(more)
    }

    /// Claims the subscription's due messages and sends them here, as many at once as a lane
    /// would; true when more were due.
    async fn scan_inline(&self, subscription: &Subscription) -> Result<bool, DeliveryError> {
        use futures::StreamExt;
        let now = now_ms();
        let query = due(subscription, now, SCAN_BATCH);
        let page = self.inner.store.query(MESSAGES, &query).await?;
        let more = page.continuation.is_some();
        let mut jobs = Vec::new();
        for document in page.items {
            if let Some(job) = self.claim(document, now).await? {
                jobs.push(job);
            }
        }
        let in_flight = if subscription.ordered {
            1
        } else {
            self.inner.settings.max_in_flight_per_endpoint
        };
        futures::stream::iter(jobs)
            .map(|job| self.attempt(job))
            .buffered(in_flight)
            .collect::<Vec<_>>()
            .await;
        Ok(more)
    }

    /// One pass of the scan (a custom handler's timer): what is due is sent.
    pub async fn scan_once(&self) -> Result<(), DeliveryError> {
        for _ in 0..10 {
            if !self.scan().await? {
                break;
            }
        }
        Ok(())
    }

    /// Takes a due message for this instance for a lease; `None` when another got it.
    async fn claim(&self, document: Document, now: i64) -> Result<Option<Job>, DeliveryError> {
        let (mut message, etag) = document.into_model::<Message>()?;
        message.next_attempt_at = self.lease_until(now);
        Ok(self
            .replace_unchanged(&message, &etag)
            .await?
            .map(|etag| Job { message, etag }))
    }

    /// Writes the message if it is still as read (`etag`); `None` when it changed or went.
    async fn replace_unchanged(
        &self,
        message: &Message,
        etag: &ETag,
    ) -> Result<Option<ETag>, StoreError> {
        match self
            .inner
            .store
            .replace(
                MESSAGES,
                &message.id,
                &message.id,
                to_body(message)?,
                Some(etag),
            )
            .await
        {
            Ok(written) => Ok(Some(written.etag)),
            Err(StoreError::PreconditionFailed | StoreError::NotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }

    pub async fn get(&self, id: &str) -> Result<(Message, ETag), DeliveryError> {
        let document = self
            .inner
            .store
            .read(MESSAGES, id, id)
            .await?
            .ok_or_else(|| DeliveryError::NotFound(id.to_owned()))?;
        Ok(document.into_model()?)
    }

    /// A page of messages, newest first.
    pub async fn page(
        &self,
        subscription_id: Option<&str>,
        status: Option<MessageStatus>,
        limit: u32,
        continuation: Option<String>,
    ) -> Result<(Vec<Message>, Option<String>), DeliveryError> {
        let mut query = Query::new(QueryScope::AllPartitions, limit)
            .order_by("createdAt", true)
            .continue_from(continuation);
        if let Some(status) = status {
            query = query.filter("kind", kind_of(status));
        }
        if let Some(id) = subscription_id {
            query = query.filter("subscriptionId", id);
        }
        let page = self.inner.store.query(MESSAGES, &query).await?;
        let items = page
            .items
            .into_iter()
            .map(|d| d.into_model::<Message>().map(|(m, _)| m))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, page.continuation))
    }

    /// Sends a message again, with the same `webhook-id`, as a new round of attempts.
    pub async fn retry(&self, id: &str) -> Result<Message, DeliveryError> {
        for _ in 0..8 {
            let (mut message, etag) = self.get(id).await?;
            message.resend(now_ms());
            match self
                .inner
                .store
                .replace(MESSAGES, id, id, to_body(&message)?, Some(&etag))
                .await
            {
                Ok(_) => {
                    self.inner.wake.notify_one();
                    return Ok(message);
                }
                // Being recorded by a sender right now: read it again.
                Err(StoreError::PreconditionFailed) => continue,
                Err(StoreError::NotFound) => return Err(DeliveryError::NotFound(id.to_owned())),
                Err(other) => return Err(other.into()),
            }
        }
        Err(DeliveryError::Store(StoreError::PreconditionFailed))
    }

    /// Fails every pending message of a deleted subscription (they stay visible); returns
    /// how many.
    pub async fn fail_pending(&self, subscription_id: &str) -> Result<usize, DeliveryError> {
        let mut failed = 0;
        loop {
            let query = Query::new(QueryScope::AllPartitions, 100)
                .filter("kind", kind_of(MessageStatus::Pending))
                .filter("subscriptionId", subscription_id);
            let page = self.inner.store.query(MESSAGES, &query).await?;
            if page.items.is_empty() {
                return Ok(failed);
            }
            let before = failed;
            for document in page.items {
                let (mut message, etag) = document.into_model::<Message>()?;
                message.status = MessageStatus::Failed;
                message.updated_at = now_ms();
                if self.replace_unchanged(&message, &etag).await?.is_some() {
                    failed += 1;
                }
            }
            if failed == before {
                // Every one changed under us (being sent): left as they are.
                return Ok(failed);
            }
        }
    }

    /// Sends again every failed message of the subscription created since `since`
    /// (Unix ms); returns how many.
    pub async fn recover(&self, subscription_id: &str, since: i64) -> Result<usize, DeliveryError> {
        self.inner.subscriptions.get(subscription_id).await?;
        let mut recovered = 0;
        loop {
            let query = Query::new(QueryScope::AllPartitions, 100)
                .filter("kind", kind_of(MessageStatus::Failed))
                .filter("subscriptionId", subscription_id)
                .compare("createdAt", Comparison::Ge, since);
            let page = self.inner.store.query(MESSAGES, &query).await?;
            if page.items.is_empty() {
                break;
            }
            let before = recovered;
            for document in page.items {
                let (mut message, etag) = document.into_model::<Message>()?;
                message.resend(now_ms());
                if self.replace_unchanged(&message, &etag).await?.is_some() {
                    recovered += 1;
                }
            }
            if recovered == before {
                // Every one changed under us: what is still failed is left for another call.
                break;
            }
        }
        self.inner.wake.notify_one();
        tracing::info!(subscription = %subscription_id, recovered, "failed messages sent again");
        Ok(recovered)
    }
}

/// The subscription's pending messages due at `now`, the longest waiting first.
fn due(subscription: &Subscription, now: i64, limit: usize) -> Query {
    Query::new(QueryScope::AllPartitions, u32::try_from(limit).unwrap_or(1))
        .filter("kind", kind_of(MessageStatus::Pending))
        .filter("subscriptionId", subscription.id.as_str())
        .compare("nextAttemptAt", Comparison::Le, now)
        .order_by("nextAttemptAt", false)
}

/// An error with its causes, for an attempt's excerpt (reqwest's own text omits them).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
