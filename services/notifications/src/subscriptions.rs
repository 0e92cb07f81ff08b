//! Webhook subscriptions in the store: container `subscriptions`, one partition per
//! subscription (its document, and the outbox entry of its `endpoint.disabled` event).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::bus::outbox::outbox_op;
use common::clock::{now_ms, rfc3339};
use common::events::{EndpointDisabled, EndpointDisabledV1, EventType};
use common::outbound::targets::{self, TargetError};
use common::runtime::FeedSignal;
use common::store::{BatchOp, ETag, Query, QueryScope, SharedStore, StoreError};
use serde_json::Value;

use crate::domain::signature::new_secret;
use crate::domain::subscription::{Health, Secret, Subscription, SubscriptionStatus};
use crate::wanted::{Asking, WantedEvents};

pub const SUBSCRIPTIONS: &str = "subscriptions";
const DOCUMENT_ID: &str = "subscription";
const KIND: &str = "subscription";
/// How long the list used for every event may be stale (another instance's changes).
const LIST_FRESH_MS: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscription {0} was not found")]
    NotFound(String),
    #[error("the subscription changed since the ETag in If-Match")]
    Stale,
    #[error("url {0}")]
    Target(#[from] TargetError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the bus could not be asked for the endpoint's events: {0}")]
    Bus(#[from] common::bus::BusError),
}

impl SubscriptionError {
    /// A conditional write of subscription `id` that failed.
    fn writing(id: &str, error: StoreError) -> Self {
        match error {
            StoreError::PreconditionFailed => Self::Stale,
            StoreError::NotFound => Self::NotFound(id.to_owned()),
            other => other.into(),
        }
    }
}

/// What a client sends to create or replace a subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionInput {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub rate_limit: Option<u32>,
    pub ordered: bool,
}

pub fn to_body(subscription: &Subscription) -> Result<Value, StoreError> {
    let mut body =
        serde_json::to_value(subscription).map_err(|e| StoreError::Serialization(e.into()))?;
    if let Some(fields) = body.as_object_mut() {
        fields.insert("kind".into(), Value::String(KIND.into()));
    }
    Ok(body)
}

/// The subscriptions as listed at a time (Unix ms).
type Listed = (i64, Arc<Vec<Subscription>>);

#[derive(Clone)]
pub struct Subscriptions {
    store: SharedStore,
    allow_private_targets: bool,
    outbox: FeedSignal,
    cache: Arc<Mutex<Option<Listed>>>,
    /// Counts the changes made here: a list read while one was made is not kept.
    generation: Arc<AtomicU64>,
    /// Changes under way here. While one is, the list is read from the store: a change may
    /// be committed (and seen by a reader of the store) before its writer forgets the list.
    writing: Arc<AtomicUsize>,
    /// Called after every change made here (wakes the deliveries).
    changed: Arc<tokio::sync::Notify>,
    /// Asked for the events an endpoint wants before it is created or changed.
    wanted: Option<WantedEvents>,
}

impl Subscriptions {
    pub fn new(store: SharedStore, allow_private_targets: bool, outbox: FeedSignal) -> Self {
        Self {
            store,
            allow_private_targets,
            outbox,
            cache: Arc::default(),
            generation: Arc::default(),
            writing: Arc::default(),
            changed: Arc::default(),
            wanted: None,
        }
    }

    /// Asks the bus for the events each endpoint wants, as it is created or changed.
    pub fn asking(mut self, wanted: WantedEvents) -> Self {
        self.wanted = Some(wanted);
        self
    }

    async fn ask(&self, filters: &[String]) -> Result<Option<Asking>, SubscriptionError> {
        match &self.wanted {
            Some(wanted) => Ok(Some(wanted.ask(filters).await?)),
            None => Ok(None),
        }
    }

    async fn asked(&self, asking: Option<Asking>) {
        if let (Some(wanted), Some(asking)) = (&self.wanted, asking) {
            wanted.asked(asking).await;
        }
    }

    /// Notified after every change made through this instance.
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// Marks a change under way until the guard drops; then the list is forgotten. A list
    /// read meanwhile is not kept: it ends while the change is under way (`writing`) or
    /// after it was forgotten (`generation`).
    fn writing(&self) -> Writing<'_> {
        self.writing.fetch_add(1, Ordering::SeqCst);
        Writing(self)
    }

    fn forget(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = None;
        }
        self.changed.notify_waiters();
    }

    pub async fn create(
        &self,
        input: SubscriptionInput,
    ) -> Result<(Subscription, ETag), SubscriptionError> {
        targets::check_target(&input.url, self.allow_private_targets).await?;
        let now = now_ms();
        let subscription = Subscription {
            id: uuid::Uuid::now_v7().to_string(),
            url: input.url,
            event_types: input.event_types,
            description: input.description,
            rate_limit: input.rate_limit,
            ordered: input.ordered,
            status: SubscriptionStatus::Active,
            disabled_reason: None,
            failing_since: None,
            secrets: vec![Secret {
                value: new_secret(),
                expires_at: None,
            }],
            created_at: now,
            updated_at: now,
        };
        let asking = self.ask(&subscription.event_types).await?;
        let writing = self.writing();
        let written = self
            .store
            .create(
                SUBSCRIPTIONS,
                &subscription.id,
                DOCUMENT_ID,
                to_body(&subscription)?,
            )
            .await?;
        drop(writing);
        self.asked(asking).await;
        tracing::info!(subscription = %subscription.id, url = %subscription.url, "webhook subscription created");
        Ok((subscription, written.etag))
    }

    pub async fn get(&self, id: &str) -> Result<(Subscription, ETag), SubscriptionError> {
        let document = self
            .store
            .read(SUBSCRIPTIONS, id, DOCUMENT_ID)
            .await?
            .ok_or_else(|| SubscriptionError::NotFound(id.to_owned()))?;
        Ok(document.into_model()?)
    }

    /// One page, oldest first.
    pub async fn page(
        &self,
        limit: u32,
        continuation: Option<String>,
    ) -> Result<(Vec<(Subscription, ETag)>, Option<String>), SubscriptionError> {
        let query = Query::new(QueryScope::AllPartitions, limit)
            .filter("kind", KIND)
            .order_by("createdAt", false)
            .continue_from(continuation);
        let page = self.store.query(SUBSCRIPTIONS, &query).await?;
        let items = page
            .items
            .into_iter()
            .map(|d| d.into_model())
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, page.continuation))
    }

    /// Every subscription, listed at most once a second (each event is matched against
    /// them).
    pub async fn current(&self) -> Result<Arc<Vec<Subscription>>, SubscriptionError> {
        let now = now_ms();
        if self.writing.load(Ordering::SeqCst) == 0
            && let Ok(cache) = self.cache.lock()
            && let Some((at, listed)) = cache.as_ref()
            && now - at < LIST_FRESH_MS
        {
            return Ok(listed.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let listed = Arc::new(self.from_store().await?);
        if let Ok(mut cache) = self.cache.lock()
            && self.generation.load(Ordering::SeqCst) == generation
            && self.writing.load(Ordering::SeqCst) == 0
        {
            *cache = Some((now, listed.clone()));
        }
        Ok(listed)
    }

    /// Every subscription, read from the store now.
    pub async fn from_store(&self) -> Result<Vec<Subscription>, SubscriptionError> {
        let mut all = Vec::new();
        let mut continuation = None;
        loop {
            let (items, next) = self.page(100, continuation).await?;
            all.extend(items.into_iter().map(|(s, _)| s));
            match next {
                Some(next) => continuation = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// The subscription as last listed (changes made here are seen at once, another
    /// instance's within a second), read from the store when the list does not have it.
    pub async fn find(&self, id: &str) -> Result<Subscription, SubscriptionError> {
        if let Some(found) = self.current().await?.iter().find(|s| s.id == id) {
            return Ok(found.clone());
        }
        Ok(self.get(id).await?.0)
    }

    /// Applies `change` to the subscription as it is now, written only if `expected` (when
    /// given) is still its ETag.
    async fn change(
        &self,
        id: &str,
        expected: Option<&ETag>,
        change: impl FnOnce(&mut Subscription),
    ) -> Result<(Subscription, ETag), SubscriptionError> {
        let (mut subscription, current) = self.get(id).await?;
        if expected.is_some_and(|e| *e != current) {
            return Err(SubscriptionError::Stale);
        }
        change(&mut subscription);
        subscription.updated_at = now_ms();
        let writing = self.writing();
        let written = self
            .store
            .replace(
                SUBSCRIPTIONS,
                id,
                DOCUMENT_ID,
                to_body(&subscription)?,
                Some(&current),
            )
            .await
            .map_err(|error| SubscriptionError::writing(id, error))?;
        drop(writing);
        Ok((subscription, written.etag))
    }

    pub async fn replace(
        &self,
        id: &str,
        input: SubscriptionInput,
        expected: &ETag,
    ) -> Result<(Subscription, ETag), SubscriptionError> {
        targets::check_target(&input.url, self.allow_private_targets).await?;
        let asking = self.ask(&input.event_types).await?;
        let changed = self
            .change(id, Some(expected), |s| {
                s.url = input.url;
                s.event_types = input.event_types;
                s.description = input.description;
                s.rate_limit = input.rate_limit;
                s.ordered = input.ordered;
            })
            .await?;
        self.asked(asking).await;
        Ok(changed)
    }

    pub async fn delete(&self, id: &str, expected: Option<&ETag>) -> Result<(), SubscriptionError> {
        let (_, current) = self.get(id).await?;
        if expected.is_some_and(|e| *e != current) {
            return Err(SubscriptionError::Stale);
        }
        let writing = self.writing();
        self.store
            .delete(SUBSCRIPTIONS, id, DOCUMENT_ID, Some(&current))
            .await
            .map_err(|error| SubscriptionError::writing(id, error))?;
        drop(writing);
        tracing::info!(subscription = %id, "webhook subscription deleted");
        Ok(())
    }

    /// Pauses, or resumes (which also ends a disabled state and its failing period).
    pub async fn set_active(
        &self,
        id: &str,
        active: bool,
    ) -> Result<(Subscription, ETag), SubscriptionError> {
        self.change(id, None, |s| {
            if active {
                s.status = SubscriptionStatus::Active;
                s.disabled_reason = None;
                s.failing_since = None;
            } else {
                s.status = SubscriptionStatus::Paused;
            }
        })
        .await
    }

    /// A new signing secret; the old one keeps signing beside it for a day.
    pub async fn rotate_secret(
        &self,
        id: &str,
    ) -> Result<(Subscription, ETag, String), SubscriptionError> {
        let mut secret = String::new();
        let (subscription, etag) = self
            .change(id, None, |s| secret = s.rotate_secret(now_ms()))
            .await?;
        tracing::info!(subscription = %id, "signing secret rotated");
        Ok((subscription, etag, secret))
    }

    /// Records what an attempt says of the endpoint's health: the start or end of a
    /// failing period, or, after too long, the endpoint disabled together with its
    /// `notifications.endpoint.disabled.v1` event.
    pub async fn record_health(
        &self,
        id: &str,
        health: Health,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        let result = match health {
            Health::Unchanged => return Ok(()),
            Health::FailingSince(at) => self
                .change(id, None, |s| {
                    s.failing_since.get_or_insert(at);
                })
                .await
                .map(drop),
            Health::Recovered => self
                .change(id, None, |s| s.failing_since = None)
                .await
                .map(drop),
            Health::Disable { failing_since } => self.disable(id, failing_since, reason).await,
        };
        match result {
            // Changed meanwhile (by a resume, or another attempt): the next attempt says
            // again what it sees.
            Err(SubscriptionError::Stale | SubscriptionError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    async fn disable(
        &self,
        id: &str,
        failing_since: i64,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        let (mut subscription, etag) = self.get(id).await?;
        if subscription.status != SubscriptionStatus::Active {
            return Ok(());
        }
        let since = rfc3339(failing_since).unwrap_or_default();
        subscription.status = SubscriptionStatus::Disabled;
        subscription.disabled_reason = Some(format!(
            "every attempt failed since {since}; the last: {reason}"
        ));
        subscription.updated_at = now_ms();
        let event = EndpointDisabled::event(
            id,
            &EndpointDisabledV1 {
                subscription_id: id.to_owned(),
                url: subscription.url.clone(),
                failing_since: since,
                reason: reason.to_owned(),
            },
        )
        .map_err(|e| StoreError::Serialization(e.into()))?;
        let writing = self.writing();
        self.store
            .batch(
                SUBSCRIPTIONS,
                id,
                vec![
                    BatchOp::Replace {
                        id: DOCUMENT_ID.to_owned(),
                        body: to_body(&subscription)?,
                        if_match: Some(etag),
                    },
                    outbox_op(EndpointDisabled::TOPIC, &event),
                ],
            )
            .await
            .map_err(|error| match error {
                StoreError::PreconditionFailed => SubscriptionError::Stale,
                other => other.into(),
            })?;
        self.outbox.notify();
        drop(writing);
        tracing::warn!(subscription = %id, url = %subscription.url, %reason, "webhook endpoint disabled after failing too long");
        Ok(())
    }
}

/// A change under way (see [`Subscriptions::writing`]).
struct Writing<'a>(&'a Subscriptions);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.forget();
        self.0.writing.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_is_listed_as_soon_as_the_store_has_it() {
        let (_dir, store) = common::testing::embedded_store();
        let subscriptions = Subscriptions::new(store.clone(), true, FeedSignal::default());
        let (created, _) = subscriptions
            .create(SubscriptionInput {
                url: "http://127.0.0.1:9/hooks".into(),
                event_types: vec!["orders.*".into()],
                description: String::new(),
                rate_limit: None,
                ordered: false,
            })
            .await
            .unwrap();
        assert_eq!(
            subscriptions.current().await.unwrap()[0].status,
            SubscriptionStatus::Active
        );
        // A change committed, its writer not yet done: the list must not be the one before.
        let writing = subscriptions.writing();
        let (mut disabled, etag) = subscriptions.get(&created.id).await.unwrap();
        disabled.status = SubscriptionStatus::Disabled;
        store
            .replace(
                SUBSCRIPTIONS,
                &created.id,
                DOCUMENT_ID,
                to_body(&disabled).unwrap(),
                Some(&etag),
            )
            .await
            .unwrap();
        assert_eq!(
            subscriptions.current().await.unwrap()[0].status,
            SubscriptionStatus::Disabled
        );
        drop(writing);
        assert_eq!(
            subscriptions.current().await.unwrap()[0].status,
            SubscriptionStatus::Disabled
        );
    }
}
