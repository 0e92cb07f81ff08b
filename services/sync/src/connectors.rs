//! Connectors: registering external systems, queueing every change they asked for, and
//! delivering the queue in order, with retries on a schedule and parking of what keeps
//! failing.
//!
//! Container `connectors`, one partition per connector (id = partition key) holding its
//! settings (`connector`), its delivery figures (`status`) and its queue (`d:<event id>`,
//! one per event: a change queued twice is one delivery).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bus::CloudEvent;
use common::clock::now_ms;
use common::outbound::breaker::{self, Admission};
use common::outbound::targets::{self, TargetError};
use common::outbound::{Breakers, resilient};
use common::store::{ETag, Query, QueryScope, SharedStore, StoreError};
use hmac::Mac;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::domain::connector::{
    AfterFailure, Connector, ConnectorAuth, Delivery, DeliveryState, Entity, after_failure,
    entity_key,
};
use crate::settings::ConnectorSettings;

pub const CONNECTORS: &str = "connectors";
const CONNECTOR_ID: &str = "connector";
const STATUS_ID: &str = "status";
const KIND_CONNECTOR: &str = "connector";
const KIND_STATUS: &str = "status";
const KIND_DELIVERY: &str = "delivery";
/// Deliveries looked at per connector per round.
const ROUND: u32 = 50;
/// Bytes of a failed answer kept as its error.
const EXCERPT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("connector {0} was not found")]
    NotFound(String),
    #[error("the connector changed since the ETag in If-Match")]
    Stale,
    #[error("url {0}")]
    Target(#[from] TargetError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn now_us() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000).unwrap_or(0)
}

fn with_kind<T: Serialize>(kind: &str, value: &T) -> Result<Value, StoreError> {
    let mut body = serde_json::to_value(value).map_err(|e| StoreError::Serialization(e.into()))?;
    if let Some(object) = body.as_object_mut() {
        object.insert("kind".into(), Value::String(kind.into()));
    }
    Ok(body)
}

fn delivery_id(event_id: &str) -> String {
    format!("d:{event_id}")
}

/// What a client sends to register or replace a connector.
pub struct ConnectorInput {
    pub name: String,
    pub url: String,
    pub entities: Vec<Entity>,
    /// `None` on a replace: keep the secret there is.
    pub auth: Option<ConnectorAuth>,
}

/// The last change a connector took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub delivered: u64,
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A connector's delivery state.
pub struct Status {
    pub figures: Figures,
    pub pending: u64,
    /// Milliseconds the oldest pending change has waited.
    pub oldest_pending_ms: Option<i64>,
    pub parked: Vec<Delivery>,
}

/// The connectors as listed at a time (Unix milliseconds).
type Listed = (i64, Vec<Connector>);

#[derive(Clone)]
pub struct Connectors {
    store: SharedStore,
    settings: ConnectorSettings,
    http: common::outbound::LazyClient,
    /// The service's circuit breakers, one per connector origin.
    breakers: Breakers,
    /// Wakes the delivery loop when changes are queued.
    queued: Arc<Notify>,
    /// The connectors, as last listed (cleared by every change made here).
    cache: Arc<Mutex<Option<Listed>>>,
}

impl Connectors {
    pub fn new(
        store: SharedStore,
        settings: ConnectorSettings,
        breakers: Breakers,
    ) -> anyhow::Result<Self> {
        let http = targets::lazy_client(
            Duration::from_millis(settings.timeout_ms),
            settings.allow_private_targets,
        );
        Ok(Self {
            store,
            settings,
            http,
            breakers,
            queued: Arc::new(Notify::new()),
            cache: Arc::new(Mutex::new(None)),
        })
    }

    fn forget_list(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            *cache = None;
        }
    }

    pub async fn create(&self, input: ConnectorInput) -> Result<(Connector, ETag), ConnectorError> {
        targets::check_target(&input.url, self.settings.allow_private_targets).await?;
        let now = now_ms();
        let connector = Connector {
            id: uuid::Uuid::now_v7().to_string(),
            name: input.name,
            url: input.url,
            entities: input.entities,
            auth: input.auth.unwrap_or(ConnectorAuth::None),
            paused: false,
            created_at: now,
            updated_at: now,
        };
        let written = self
            .store
            .create(
                CONNECTORS,
                &connector.id,
                CONNECTOR_ID,
                with_kind(KIND_CONNECTOR, &connector)?,
            )
            .await?;
        self.forget_list();
        tracing::info!(connector = %connector.id, name = %connector.name, "connector registered");
        Ok((connector, written.etag))
    }

    pub async fn get(&self, id: &str) -> Result<(Connector, ETag), ConnectorError> {
        let document = self
            .store
            .read(CONNECTORS, id, CONNECTOR_ID)
            .await?
            .ok_or_else(|| ConnectorError::NotFound(id.to_owned()))?;
        Ok(document.into_model()?)
    }

    /// Every connector, oldest first.
    pub async fn list(&self) -> Result<Vec<Connector>, ConnectorError> {
        let mut all = Vec::new();
        let mut continuation = None;
        loop {
            let query = Query::new(QueryScope::AllPartitions, 100)
                .filter("kind", KIND_CONNECTOR)
                .order_by("createdAt", false)
                .continue_from(continuation);
            let page = self.store.query(CONNECTORS, &query).await?;
            for document in page.items {
                all.push(document.into_model::<Connector>()?.0);
            }
            match page.continuation {
                Some(next) => continuation = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// The connectors, listed at most once a second for the hot path of queueing.
    async fn current(&self) -> Result<Vec<Connector>, ConnectorError> {
        let now = now_ms();
        if let Ok(cache) = self.cache.lock()
            && let Some((at, connectors)) = cache.as_ref()
            && now - at < 1_000
        {
            return Ok(connectors.clone());
        }
        let connectors = self.list().await?;
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((now, connectors.clone()));
        }
        Ok(connectors)
    }

    async fn write(
        &self,
        mut connector: Connector,
        expected: Option<&ETag>,
    ) -> Result<(Connector, ETag), ConnectorError> {
        let (_, current) = self.get(&connector.id).await?;
        if expected.is_some_and(|e| *e != current) {
            return Err(ConnectorError::Stale);
        }
        connector.updated_at = now_ms();
        let written = self
            .store
            .replace(
                CONNECTORS,
                &connector.id,
                CONNECTOR_ID,
                with_kind(KIND_CONNECTOR, &connector)?,
                Some(&current),
            )
            .await
            .map_err(|error| match error {
                StoreError::PreconditionFailed => ConnectorError::Stale,
                StoreError::NotFound => ConnectorError::NotFound(connector.id.clone()),
                other => other.into(),
            })?;
        self.forget_list();
        self.queued.notify_one();
        Ok((connector, written.etag))
    }

    pub async fn replace(
        &self,
        id: &str,
        input: ConnectorInput,
        expected: &ETag,
    ) -> Result<(Connector, ETag), ConnectorError> {
        targets::check_target(&input.url, self.settings.allow_private_targets).await?;
        let (mut connector, _) = self.get(id).await?;
        connector.name = input.name;
        connector.url = input.url;
        connector.entities = input.entities;
        if let Some(auth) = input.auth {
            connector.auth = auth;
        }
        self.write(connector, Some(expected)).await
    }

    pub async fn set_paused(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<(Connector, ETag), ConnectorError> {
        let (mut connector, etag) = self.get(id).await?;
        connector.paused = paused;
        self.write(connector, Some(&etag)).await
    }

    /// Removes the connector and everything queued for it.
    pub async fn delete(&self, id: &str, expected: Option<&ETag>) -> Result<(), ConnectorError> {
        let (_, current) = self.get(id).await?;
        if expected.is_some_and(|e| *e != current) {
            return Err(ConnectorError::Stale);
        }
        self.store
            .delete(CONNECTORS, id, CONNECTOR_ID, Some(&current))
            .await
            .map_err(|error| match error {
                StoreError::PreconditionFailed => ConnectorError::Stale,
                other => other.into(),
            })?;
        self.forget_list();
        loop {
            let page = self
                .store
                .query(
                    CONNECTORS,
                    &Query::new(QueryScope::Partition(id.to_owned()), 100),
                )
                .await?;
            if page.items.is_empty() {
                return Ok(());
            }
            for document in page.items {
                match self.store.delete(CONNECTORS, id, &document.id, None).await {
                    Ok(()) | Err(StoreError::NotFound) => {}
                    Err(other) => return Err(other.into()),
                }
            }
        }
    }

    /// Queues `event` for every connector that asked for its entity (paused ones too: they
    /// get it when resumed).
    pub async fn enqueue(&self, event: &CloudEvent) -> Result<usize, ConnectorError> {
        let Some(entity) = Entity::of_event(&event.event_type) else {
            return Ok(0);
        };
        let key = entity_key(entity, &event.data, event.subject.as_deref()).unwrap_or_default();
        let body = serde_json::to_value(event).map_err(|e| StoreError::Serialization(e.into()))?;
        let mut queued = 0;
        for connector in self.current().await? {
            if !connector.wants(entity) {
                continue;
            }
            let delivery = Delivery {
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                entity,
                key: key.clone(),
                event: body.clone(),
                state: DeliveryState::Pending,
                seq: now_us(),
                attempts: 0,
                next_attempt_at: 0,
                last_error: None,
            };
            match self
                .store
                .create(
                    CONNECTORS,
                    &connector.id,
                    &delivery_id(&event.id),
                    with_kind(KIND_DELIVERY, &delivery)?,
                )
                .await
            {
                Ok(_) => queued += 1,
                // Queued when this event came before.
                Err(StoreError::Conflict) => {}
                Err(other) => return Err(other.into()),
            }
        }
        if queued > 0 {
            self.queued.notify_one();
        }
        Ok(queued)
    }

    async fn deliveries(
        &self,
        id: &str,
        state: DeliveryState,
        limit: u32,
        continuation: Option<String>,
    ) -> Result<(Vec<(Delivery, ETag)>, Option<String>), ConnectorError> {
        let state = match state {
            DeliveryState::Pending => "pending",
            DeliveryState::Parked => "parked",
        };
        let query = Query::new(QueryScope::Partition(id.to_owned()), limit)
            .filter("kind", KIND_DELIVERY)
            .filter("state", state)
            .order_by("seq", false)
            .continue_from(continuation);
        let page = self.store.query(CONNECTORS, &query).await?;
        let items = page
            .items
            .into_iter()
            .map(|document| document.into_model::<Delivery>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, page.continuation))
    }

    async fn all_deliveries(
        &self,
        id: &str,
        state: DeliveryState,
    ) -> Result<Vec<Delivery>, ConnectorError> {
        let mut all = Vec::new();
        let mut continuation = None;
        loop {
            let (items, next) = self.deliveries(id, state, 100, continuation).await?;
            all.extend(items.into_iter().map(|(d, _)| d));
            match next {
                Some(next) => continuation = Some(next),
                None => return Ok(all),
            }
        }
    }

    async fn figures(&self, id: &str) -> Result<(Figures, Option<ETag>), ConnectorError> {
        match self.store.read(CONNECTORS, id, STATUS_ID).await? {
            Some(document) => {
                let (figures, etag) = document.into_model::<Figures>()?;
                Ok((figures, Some(etag)))
            }
            None => Ok((Figures::default(), None)),
        }
    }

    async fn record(&self, id: &str, change: impl Fn(&mut Figures)) -> Result<(), ConnectorError> {
        for _ in 0..8 {
            let (mut figures, etag) = self.figures(id).await?;
            change(&mut figures);
            let body = with_kind(KIND_STATUS, &figures)?;
            let written = match &etag {
                Some(etag) => {
                    self.store
                        .replace(CONNECTORS, id, STATUS_ID, body, Some(etag))
                        .await
                }
                None => self.store.create(CONNECTORS, id, STATUS_ID, body).await,
            };
            match written {
                Ok(_) => return Ok(()),
                Err(
                    StoreError::PreconditionFailed | StoreError::Conflict | StoreError::NotFound,
                ) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }

    pub async fn status(&self, id: &str) -> Result<Status, ConnectorError> {
        self.get(id).await?;
        let (figures, _) = self.figures(id).await?;
        let pending = self.all_deliveries(id, DeliveryState::Pending).await?;
        let parked = self.all_deliveries(id, DeliveryState::Parked).await?;
        let oldest = pending.first().map(|d| now_ms() - d.seq / 1_000);
        Ok(Status {
            figures,
            pending: pending.len() as u64,
            oldest_pending_ms: oldest,
            parked,
        })
    }

    /// Sends the parked deliveries again, in their order; returns how many.
    pub async fn retry(&self, id: &str) -> Result<usize, ConnectorError> {
        self.get(id).await?;
        let mut count = 0;
        loop {
            let (parked, _) = self
                .deliveries(id, DeliveryState::Parked, 100, None)
                .await?;
            if parked.is_empty() {
                break;
            }
            for (mut delivery, etag) in parked {
                delivery.state = DeliveryState::Pending;
                delivery.attempts = 0;
                delivery.next_attempt_at = 0;
                match self
                    .store
                    .replace(
                        CONNECTORS,
                        id,
                        &delivery_id(&delivery.event_id),
                        with_kind(KIND_DELIVERY, &delivery)?,
                        Some(&etag),
                    )
                    .await
                {
                    Ok(_) => count += 1,
                    Err(StoreError::PreconditionFailed | StoreError::NotFound) => {}
                    Err(other) => return Err(other.into()),
                }
            }
        }
        self.queued.notify_one();
        Ok(count)
    }

    /// Delivers what is due, connector by connector side by side, until `stop`. Idle, it
    /// sleeps until a change is queued here, the next retry is due, or `poll_interval_ms`
    /// has passed (changes queued by another instance).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        loop {
            if *stop.borrow() {
                return;
            }
            let (delivered, next_due) = match self.round().await {
                Ok(round) => round,
                Err(error) => {
                    tracing::warn!(%error, "connectors could not be listed");
                    (0, None)
                }
            };
            if delivered == 0 {
                let wait = next_due.map_or(poll, |at| {
                    Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0))
                        .clamp(Duration::from_millis(10), poll)
                });
                tokio::select! {
                    _ = stop.changed() => {}
                    () = self.queued.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// Delivers what is due to every connector side by side (a custom handler's timer runs
    /// this alone); returns how many went and when the next retry is due.
    pub async fn round(&self) -> Result<(usize, Option<i64>), ConnectorError> {
        let connectors = self.list().await?;
        let rounds = connectors
            .into_iter()
            .filter(|c| !c.paused)
            .map(|connector| self.deliver_due(connector));
        Ok(futures::future::join_all(rounds).await.into_iter().fold(
            (0, None::<i64>),
            |(sum, due), (delivered, next)| {
                let due = match (due, next) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (sum + delivered, due)
            },
        ))
    }

    /// Delivers the connector's due deliveries in order; a delivery waiting for its retry
    /// holds back the ones after it, and one parked holds back later changes of its entity.
    /// Returns how many went, and when the next retry is due.
    #[tracing::instrument(name = "connector.deliver", skip_all, fields(connector = %connector.id))]
    async fn deliver_due(&self, connector: Connector) -> (usize, Option<i64>) {
        match self.try_deliver_due(&connector).await {
            Ok(round) => round,
            Err(error) => {
                tracing::warn!(%error, "deliveries could not be worked on");
                (0, None)
            }
        }
    }

    async fn try_deliver_due(
        &self,
        connector: &Connector,
    ) -> Result<(usize, Option<i64>), ConnectorError> {
        let (due, _) = self
            .deliveries(&connector.id, DeliveryState::Pending, ROUND, None)
            .await?;
        if due.is_empty() {
            return Ok((0, None));
        }
        let mut parked_keys: BTreeSet<(Entity, String)> = self
            .all_deliveries(&connector.id, DeliveryState::Parked)
            .await?
            .into_iter()
            .map(|d| (d.entity, d.key))
            .collect();
        let mut delivered = 0;
        for (mut delivery, etag) in due {
            let id = delivery_id(&delivery.event_id);
            if parked_keys.contains(&(delivery.entity, delivery.key.clone())) {
                delivery.state = DeliveryState::Parked;
                delivery.last_error = Some("held behind a parked change of the same entity".into());
                self.save(connector, &id, &delivery, &etag).await?;
                continue;
            }
            if delivery.next_attempt_at > now_ms() {
                return Ok((delivered, Some(delivery.next_attempt_at)));
            }
            // A connector that keeps failing is left alone while its circuit is open; the
            // delivery waits, with no attempt spent.
            if let Ok(url) = url::Url::parse(&connector.url)
                && let Admission::Refused { retry_in } =
                    self.breakers.admit(&breaker::target_of(&url))
            {
                let at = now_ms().saturating_add(i64::try_from(retry_in.as_millis()).unwrap_or(0));
                return Ok((delivered, Some(at)));
            }
            match self.send(connector, &delivery.event).await {
                Ok(()) => {
                    match self
                        .store
                        .delete(CONNECTORS, &connector.id, &id, Some(&etag))
                        .await
                    {
                        Ok(()) | Err(StoreError::NotFound | StoreError::PreconditionFailed) => {}
                        Err(other) => return Err(other.into()),
                    }
                    let (event_id, event_type) =
                        (delivery.event_id.clone(), delivery.event_type.clone());
                    self.record(&connector.id, |figures| {
                        figures.delivered += 1;
                        figures.last_event_id = Some(event_id.clone());
                        figures.last_event_type = Some(event_type.clone());
                        figures.last_delivered_at = Some(now_ms());
                    })
                    .await?;
                    delivered += 1;
                }
                Err(reason) => {
                    delivery.attempts += 1;
                    delivery.last_error = Some(reason.clone());
                    match after_failure(
                        delivery.attempts,
                        now_ms(),
                        &self.settings.retry_schedule_ms,
                    ) {
                        AfterFailure::RetryAt(at) => delivery.next_attempt_at = at,
                        AfterFailure::Park => {
                            tracing::warn!(event = %delivery.event_id, %reason, "delivery parked after its last attempt");
                            delivery.state = DeliveryState::Parked;
                            parked_keys.insert((delivery.entity, delivery.key.clone()));
                        }
                    }
                    self.save(connector, &id, &delivery, &etag).await?;
                    self.record(&connector.id, |figures| {
                        figures.failures += 1;
                        figures.last_error = Some(reason.clone());
                    })
                    .await?;
                    if delivery.state == DeliveryState::Pending {
                        // In order: nothing after it goes before it.
                        return Ok((delivered, Some(delivery.next_attempt_at)));
                    }
                }
            }
        }
        // A full round may have left more behind it.
        Ok((delivered, Some(now_ms())))
    }

    async fn save(
        &self,
        connector: &Connector,
        id: &str,
        delivery: &Delivery,
        etag: &ETag,
    ) -> Result<(), ConnectorError> {
        match self
            .store
            .replace(
                CONNECTORS,
                &connector.id,
                id,
                with_kind(KIND_DELIVERY, delivery)?,
                Some(etag),
            )
            .await
        {
            Ok(_) | Err(StoreError::NotFound | StoreError::PreconditionFailed) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// One attempt: the CloudEvent as the body, signed or with the bearer token.
    async fn send(&self, connector: &Connector, event: &Value) -> Result<(), String> {
        targets::check_url(&connector.url, self.settings.allow_private_targets)
            .map_err(|e| format!("url {e}"))?;
        let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let mut request = self
            .http
            .get()
            .map_err(|e| format!("no HTTP client: {e}"))?
            .post(&connector.url)
            .header("content-type", "application/cloudevents+json");
        match &connector.auth {
            ConnectorAuth::Bearer { token } => request = request.bearer_auth(token),
            ConnectorAuth::Hmac { secret } => {
                let timestamp = OffsetDateTime::now_utc().unix_timestamp().to_string();
                let signature = signature(secret, &timestamp, &body)?;
                request = request
                    .header("x-signature", format!("sha256={signature}"))
                    .header("x-signature-timestamp", timestamp);
            }
            ConnectorAuth::None => {}
        }
        let target = url::Url::parse(&connector.url)
            .map(|url| breaker::target_of(&url))
            .unwrap_or_default();
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) => {
                self.breakers.failed(&target);
                return Err(format!("not reached: {error}"));
            }
        };
        let status = response.status();
        if resilient::is_transient(status) {
            self.breakers.failed(&target);
        } else {
            self.breakers.succeeded(&target);
        }
        if status.is_success() {
            return Ok(());
        }
        let excerpt = targets::excerpt(response, EXCERPT).await;
        Err(format!("answered {status}: {excerpt}"))
    }
}

/// The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
fn signature(secret: &str, timestamp: &str, body: &[u8]) -> Result<String, String> {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The document a test or an operator sees for a parked delivery.
pub fn parked_view(delivery: &Delivery) -> Value {
    json!({
        "eventId": delivery.event_id,
        "type": delivery.event_type,
        "entity": delivery.entity.as_str(),
        "key": delivery.key,
        "attempts": delivery.attempts,
        "lastError": delivery.last_error,
    })
}

#[cfg(test)]
mod tests {
    /// Computed independently (Python's `hmac`), so a receiver in any language agrees.
    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        assert_eq!(
            super::signature(
                "a-shared-secret-of-some-length",
                "1700000000",
                br#"{"a":1}"#
            )
            .unwrap(),
            "0dcfc1e6d651b70f502c376a75cef0f2eb4bf1df915cd0d846b4572215d0984a"
        );
    }
}
