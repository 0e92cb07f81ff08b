//! The Azure Service Bus adapter, on `azure_messaging_servicebus` (Service Bus's REST data
//! plane) with SAS authentication. The crate's HTTP client is injected: production uses
//! [`ReqwestTransport`]; the contract tests use an in-process broker.
//!
//! Mapping of the port onto the REST API:
//! - publish: `POST {topic}/messages`, `BrokerProperties` (MessageId = event id,
//!   CorrelationId, Label = event type, ScheduledEnqueueTimeUtc), application properties as
//!   headers (strings JSON-quoted), the CloudEvent as the body.
//! - receive: peek-lock (`POST .../messages/head?timeout=0`) up to `max` times; complete is
//!   `DELETE` of the lock, abandon is `PUT` (unlock) once the delay has passed (the lock is
//!   held until then), the broker dead-letters after the subscription's MaxDeliveryCount.
//! - dead-letter: REST has no such operation, so the message is copied to the queue
//!   `{topic}.{subscription}.dead-letters` with `DeadLetterReason` and
//!   `DeadLetterErrorDescription`, then completed. `dead_letters` reads that queue and the
//!   subscription's `$deadletterqueue`; `replay` publishes the event again (a new message
//!   id, the same event id: handlers that saw it already skip it) and removes the letter.
//! - ensure_subscription: the management REST API (`PUT` of an Atom entry) creates what is
//!   missing when the SAS policy has Manage rights; an existing entity is left as it is.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::usage::{Counted, count};

use async_trait::async_trait;
use azure_core_legacy::{HttpClient, Method, Request, StatusCode};
use azure_messaging_servicebus::service_bus::{
    QueueClient, SendMessageOptions, SettableBrokerProperties, TopicClient,
};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use time::OffsetDateTime;

use super::{
    BusError, CloudEvent, DeadLetter, Delivery, EventBus, LockToken, Message, SubscriptionCounts,
    SubscriptionOptions,
};

const REASON: &str = "DeadLetterReason";
const DESCRIPTION: &str = "DeadLetterErrorDescription";
/// Deliveries a message had before we moved it to the dead-letter queue ourselves.
const DELIVERIES: &str = "DeadLetterDeliveryCount";
/// Application properties that are ours, not the sender's.
const RESERVED_HEADERS: &[&str] = &[REASON, DESCRIPTION, DELIVERIES];

pub struct ServiceBusBus {
    http: Arc<dyn HttpClient>,
    namespace: String,
    policy: String,
    key: SecretString,
    locks: Mutex<HashMap<String, Arc<Locked>>>,
    /// The queues of parked letters this adapter made sure of.
    parked_queues: Mutex<std::collections::BTreeSet<String>>,
}

/// Sends a request the adapter made itself; a transport failure is `Unavailable`.
async fn execute(
    http: &Arc<dyn HttpClient>,
    request: &Request,
) -> Result<azure_core_legacy::Response, BusError> {
    http.execute_request(request).await.map_err(unavailable)
}

/// Signs and sends requests the adapter makes itself (management, peek-lock, settlement).
#[derive(Clone)]
struct Signer {
    http: Arc<dyn HttpClient>,
    policy: String,
    key: SecretString,
}

impl Signer {
    /// A request to `url`, signed for `resource` (the entity's URL, without a query).
    fn request(&self, url: &str, resource: &str, method: Method) -> Result<Request, BusError> {
        let mut request = Request::new(url::Url::parse(url).map_err(backend)?, method);
        request.insert_header(
            "authorization",
            sas_token(
                resource,
                &self.policy,
                self.key.expose_secret(),
                Duration::from_secs(300),
            ),
        );
        Ok(request)
    }

    /// As [`Self::request`], for a request without a body.
    fn bodiless(&self, url: &str, resource: &str, method: Method) -> Result<Request, BusError> {
        let mut request = self.request(url, resource, method)?;
        request.insert_header("content-length", "0");
        Ok(request)
    }

    /// A settlement at a locked message's `location`: DELETE completes, PUT unlocks.
    async fn settle(&self, location: &str, method: Method) -> Result<(), BusError> {
        let resource = location.split("/messages/").next().unwrap_or(location);
        let request = self.bodiless(location, resource, method)?;
        let response = execute(&self.http, &request).await?;
        match response.status() {
            status if status.is_success() => Ok(()),
            StatusCode::NotFound | StatusCode::Gone | StatusCode::Conflict => {
                Err(BusError::LockLost)
            }
            status => Err(BusError::Unavailable(
                (format!("settling a message answered {status}")).into(),
            )),
        }
    }
}

/// A message held in peek-lock, as Service Bus answered: read by the adapter itself (the
/// crate reads sequence numbers as 32-bit and fails on partitioned entities).
pub struct Locked {
    body: String,
    headers: azure_core_legacy::headers::Headers,
    location: String,
    signer: Signer,
}

impl Locked {
    fn body(&self) -> String {
        self.body.clone()
    }

    fn custom_properties<T: TryFrom<azure_core_legacy::headers::Headers>>(
        &self,
    ) -> Result<T, T::Error> {
        self.headers.clone().try_into()
    }

    /// Completes the message.
    async fn delete_message(&self) -> Result<(), BusError> {
        self.signer.settle(&self.location, Method::Delete).await
    }

    /// Gives the message back to the entity.
    async fn unlock_message(&self) -> Result<(), BusError> {
        self.signer.settle(&self.location, Method::Put).await
    }
}

impl fmt::Debug for ServiceBusBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBusBus")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn backend(error: impl fmt::Display) -> BusError {
    BusError::Backend((error.to_string()).into())
}

/// The bus cannot be reached or answers with a failure: the error is kept as the cause.
fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> BusError {
    BusError::Unavailable(crate::store::Cause::new(error))
}

/// Where a subscription's dead letters are: parked by us (explicit dead-lettering, which
/// REST cannot do) or dead-lettered by the broker (MaxDeliveryCount).
#[derive(Debug, Clone, Copy)]
enum LetterPlace {
    Parked,
    Broker,
}

const LETTER_PLACES: [LetterPlace; 2] = [LetterPlace::Parked, LetterPlace::Broker];

/// The queue that holds a subscription's explicitly dead-lettered messages.
pub fn dead_letter_queue(topic: &str, subscription: &str) -> String {
    format!("{topic}.{subscription}.dead-letters")
}

/// A Shared Access Signature for `resource_url`, as Service Bus documents it.
pub fn sas_token(resource_url: &str, policy: &str, key: &str, valid_for: Duration) -> String {
    let resource: String = url::form_urlencoded::byte_serialize(resource_url.as_bytes()).collect();
    let expiry = (OffsetDateTime::now_utc() + valid_for).unix_timestamp();
    let signature = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(format!("{resource}\n{expiry}").as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    let signature: String = url::form_urlencoded::byte_serialize(signature.as_bytes()).collect();
    format!("SharedAccessSignature sr={resource}&sig={signature}&se={expiry}&skn={policy}")
}

/// How long a receive waits on an empty subscription (Service Bus's REST long poll).
const LONG_POLL: Duration = Duration::from_secs(20);

/// The rule that filters a subscription on event types.
pub const EVENT_TYPES_RULE: &str = "event-types";

const MANAGEMENT_NS: &str = "xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\"";

/// What the adapter reads of a received message's `BrokerProperties`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceivedBrokerProperties {
    #[serde(default)]
    delivery_count: u32,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    lock_token: String,
    #[serde(default, with = "time::serde::rfc2822::option")]
    locked_until_utc: Option<OffsetDateTime>,
}

/// The `BrokerProperties` of a received message, read here rather than by the crate, whose
/// sequence numbers are 32-bit and fail on partitioned entities (64-bit numbers).
fn received_broker_properties(response: &Locked) -> Result<ReceivedBrokerProperties, BusError> {
    let headers: azure_core_legacy::headers::Headers = response
        .custom_properties::<azure_core_legacy::headers::Headers>()
        .unwrap_or_default();
    let raw = headers
        .iter()
        .find(|(name, _)| name.as_str().eq_ignore_ascii_case("brokerproperties"))
        .map(|(_, value)| value.as_str().to_owned())
        .ok_or_else(|| backend("no BrokerProperties"))?;
    serde_json::from_str(&raw).map_err(|e| backend(format!("BrokerProperties: {e}")))
}

/// The application property that sends a replayed message to one subscription only.
pub const REPLAY_TO: &str = "ReplayTo";

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A subscription's own rule: messages of its event types (the publisher sets `Label` to
/// the CloudEvents type; every type when none is given, unless its type rules say which)
/// that are not replays, and the replays addressed to it.
pub fn subscription_filter(subscription: &str, options: &SubscriptionOptions) -> String {
    let own = format!("user.{REPLAY_TO} = {}", quoted(subscription));
    match (options.event_types.is_empty(), options.types_by_rule) {
        (true, true) => own,
        (true, false) => format!("user.{REPLAY_TO} IS NULL OR {own}"),
        (false, _) => format!("({}) OR {own}", types_filter(&options.event_types)),
    }
}

/// Messages of these types that are not replays (a type rule).
fn types_filter(event_types: &[String]) -> String {
    let types: Vec<String> = event_types.iter().map(|t| quoted(t)).collect();
    format!(
        "sys.Label IN ({}) AND user.{REPLAY_TO} IS NULL",
        types.join(", ")
    )
}

/// The names in a feed of rules (`<entry>`s, each titled with its rule's name; a name holds
/// nothing XML escapes: letters, digits, `$`, `-`, `.` and `_`).
fn rule_names(feed: &str) -> Vec<String> {
    feed.split("<entry")
        .skip(1)
        .filter_map(|entry| {
            let after = &entry[entry.find("<title")?..];
            let start = after.find('>')? + 1;
            let end = after.find("</title>")?;
            (start <= end).then(|| after[start..end].to_owned())
        })
        .collect()
}

/// Rules listed per page.
const RULES_PAGE: usize = 100;

fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn rule_description(sql: &str) -> String {
    format!(
        "<RuleDescription {MANAGEMENT_NS}><Filter i:type=\"SqlFilter\"><SqlExpression>{}</SqlExpression></Filter><Action i:type=\"EmptyRuleAction\"/></RuleDescription>",
        xml_text(sql)
    )
}

fn management_outcome(path: &str, status: StatusCode) -> Result<(), BusError> {
    match status {
        status if status.is_success() || status == StatusCode::Conflict => Ok(()),
        // Least-privilege credentials (Send + Listen) may not manage entities: they are
        // then expected to be provisioned, and a missing one shows on the first receive.
        StatusCode::Unauthorized | StatusCode::Forbidden => {
            tracing::warn!(
                entity = path,
                "no rights to manage Service Bus entities; expecting them provisioned"
            );
            Ok(())
        }
        status => Err(BusError::Unavailable(
            (format!("managing {path} answered {status}")).into(),
        )),
    }
}

/// A send the broker refuses for the message itself (too large, malformed) is permanent;
/// everything else (throttling, timeouts, credentials) may pass on a later try.
fn send_error(error: azure_core_legacy::Error) -> BusError {
    use azure_core_legacy::error::ErrorKind;
    match error.kind() {
        ErrorKind::HttpResponse {
            status: StatusCode::PayloadTooLarge | StatusCode::BadRequest,
            ..
        } => BusError::Rejected((error.to_string()).into()),
        _ => unavailable(error),
    }
}

fn iso_duration(duration: Duration) -> String {
    format!("PT{}S", duration.as_secs_f64())
}

fn decode_property(value: &str) -> String {
    serde_json::from_str::<String>(value).unwrap_or_else(|_| value.to_owned())
}

impl ServiceBusBus {
    pub fn new(
        http: Arc<dyn HttpClient>,
        namespace: &str,
        policy: &str,
        key: SecretString,
    ) -> Self {
        Self {
            http: Arc::new(RetryingTransport::new(http)),
            namespace: namespace.to_owned(),
            policy: policy.to_owned(),
            key,
            locks: Mutex::new(HashMap::new()),
            parked_queues: Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    fn base(&self) -> String {
        format!("https://{}.servicebus.windows.net", self.namespace)
    }

    fn topic(&self, topic: &str) -> Result<TopicClient, BusError> {
        TopicClient::new(
            self.http.clone(),
            &self.namespace,
            topic,
            &self.policy,
            self.key.expose_secret().to_owned(),
        )
        .map_err(backend)
    }

    fn queue(&self, queue: &str) -> Result<QueueClient, BusError> {
        QueueClient::new(
            self.http.clone(),
            &self.namespace,
            queue,
            &self.policy,
            self.key.expose_secret().to_owned(),
        )
        .map_err(backend)
    }

    fn options(message: &Message, message_id: &str, extra: &[(&str, &str)]) -> SendMessageOptions {
        let mut properties: HashMap<String, String> = message
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()).to_string()))
            .collect();
        for (name, value) in extra {
            properties.insert(
                (*name).to_owned(),
                serde_json::Value::String((*value).to_owned()).to_string(),
            );
        }
        SendMessageOptions {
            content_type: Some("application/cloudevents+json".to_owned()),
            broker_properties: Some(SettableBrokerProperties {
                message_id: Some(message_id.to_owned()),
                correlation_id: message.correlation_id.clone(),
                label: Some(message.event.event_type.clone()),
                // The REST API takes whole seconds: round up, never deliver early.
                scheduled_enqueue_time_utc: message.scheduled_for.map(|at| {
                    let whole = at.replace_nanosecond(0).unwrap_or(at);
                    if whole < at {
                        whole + time::Duration::SECOND
                    } else {
                        whole
                    }
                }),
                ..Default::default()
            }),
            custom_properties: Some(properties),
        }
    }

    fn body(message: &Message) -> Result<String, BusError> {
        serde_json::to_string(&message.event).map_err(backend)
    }

    fn signer(&self) -> Signer {
        Signer {
            http: self.http.clone(),
            policy: self.policy.clone(),
            key: self.key.clone(),
        }
    }

    /// One peek-lock on a subscription; `None` when it is empty after `wait` (the REST
    /// long poll: an idle subscription costs a request per `wait`, not a tight loop).
    async fn peek_lock(
        &self,
        topic: &str,
        subscription: &str,
        wait: Duration,
    ) -> Result<Option<Locked>, BusError> {
        self.peek_lock_entity(&format!("{topic}/subscriptions/{subscription}"), wait)
            .await
            .map_err(|error| match error {
                BusError::UnknownSubscription { .. } => BusError::UnknownSubscription {
                    topic: topic.to_owned(),
                    subscription: subscription.to_owned(),
                },
                other => other,
            })
    }

    async fn peek_lock_queue(&self, queue: &str) -> Result<Option<Locked>, BusError> {
        match self.peek_lock_entity(queue, Duration::ZERO).await {
            Err(BusError::UnknownSubscription { .. }) => Ok(None),
            other => other,
        }
    }

    async fn peek_lock_entity(
        &self,
        entity: &str,
        wait: Duration,
    ) -> Result<Option<Locked>, BusError> {
        let resource = format!("{}/{entity}", self.base());
        let url = format!("{resource}/messages/head?timeout={}", wait.as_secs());
        let signer = self.signer();
        let request = signer.bodiless(&url, &resource, Method::Post)?;
        let response = self.execute(&request).await?;
        match response.status() {
            StatusCode::Created | StatusCode::Ok => {
                let (_, headers, body) = response.deconstruct();
                let location = headers
                    .iter()
                    .find(|(name, _)| name.as_str().eq_ignore_ascii_case("location"))
                    .map(|(_, value)| value.as_str().to_owned())
                    .ok_or_else(|| backend("a locked message without a Location"))?;
                let body = body.collect_string().await.map_err(unavailable)?;
                Ok(Some(Locked {
                    body,
                    headers,
                    location,
                    signer,
                }))
            }
            StatusCode::NoContent => Ok(None),
            StatusCode::NotFound | StatusCode::Gone => Err(BusError::UnknownSubscription {
                topic: entity.to_owned(),
                subscription: String::new(),
            }),
            StatusCode::Unauthorized | StatusCode::Forbidden => Err(BusError::Unavailable(
                "Service Bus refused the SAS token".into(),
            )),
            other => Err(BusError::Unavailable(
                (format!("peek-lock answered {other}")).into(),
            )),
        }
    }

    fn read(response: &Locked) -> Result<(Message, u32), BusError> {
        let event: CloudEvent = serde_json::from_str(&response.body())
            .map_err(|e| backend(format!("message body: {e}")))?;
        let headers: azure_core_legacy::headers::Headers = response
            .custom_properties::<azure_core_legacy::headers::Headers>()
            .unwrap_or_default();
        // Application properties come back as headers whose values are JSON strings (sent
        // quoted); plain HTTP headers are not quoted.
        let mut properties = BTreeMap::new();
        let broker = received_broker_properties(response)?;
        for (name, value) in headers.iter() {
            let (name, value) = (name.as_str(), value.as_str());
            if name.eq_ignore_ascii_case("brokerproperties") {
                continue;
            } else if value.starts_with('"')
                && value.ends_with('"')
                && !RESERVED_HEADERS
                    .iter()
                    .any(|reserved| reserved.eq_ignore_ascii_case(name))
            {
                properties.insert(name.to_owned(), decode_property(value));
            }
        }
        let delivery_count = broker.delivery_count;
        Ok((
            Message {
                event,
                correlation_id: broker.correlation_id,
                properties,
                scheduled_for: None,
            },
            delivery_count,
        ))
    }

    fn dead_letter_of(response: &Locked) -> Result<DeadLetter, BusError> {
        let (message, delivery_count) = Self::read(response)?;
        let headers: azure_core_legacy::headers::Headers = response
            .custom_properties::<azure_core_legacy::headers::Headers>()
            .unwrap_or_default();
        let property = |wanted: &str| {
            headers
                .iter()
                .find(|(name, _)| name.as_str().eq_ignore_ascii_case(wanted))
                .map(|(_, value)| decode_property(value.as_str()))
                .unwrap_or_default()
        };
        // Reading a letter is itself a delivery; what counts is how often it was
        // delivered before it was dead-lettered.
        let delivery_count = property(DELIVERIES)
            .parse()
            .unwrap_or(delivery_count.saturating_sub(1));
        Ok(DeadLetter {
            message,
            reason: property(REASON),
            description: property(DESCRIPTION),
            delivery_count,
        })
    }

    fn take_lock(&self, lock: &LockToken) -> Result<Arc<Locked>, BusError> {
        self.locks
            .lock()
            .map_err(|_| backend("lock table poisoned"))?
            .remove(&lock.0)
            .ok_or(BusError::LockLost)
    }

    /// Sends a management request (Atom entry) with a SAS token; 409 means it exists.
    /// A request the crate does not make for us (management, ping), signed like its own.
    fn signed_request(&self, path: &str, method: Method) -> Result<Request, BusError> {
        let url = format!("{}/{path}", self.base());
        self.signer().request(&url, &url, method)
    }

    /// An entity's Atom description, or the status the namespace answered instead.
    async fn describe(&self, path: &str) -> Result<Result<String, StatusCode>, BusError> {
        self.read_text(&self.signed_request(path, Method::Get)?)
            .await
    }

    /// The body of a successful answer, or the status the namespace answered instead.
    async fn read_text(&self, request: &Request) -> Result<Result<String, StatusCode>, BusError> {
        let response = self.execute(request).await?;
        if !response.status().is_success() {
            return Ok(Err(response.status()));
        }
        let text = response
            .into_body()
            .collect_string()
            .await
            .map_err(unavailable)?;
        Ok(Ok(text))
    }

    /// A page of a subscription's rules (an Atom feed), from the `skip`th.
    async fn rules_page(
        &self,
        topic: &str,
        subscription: &str,
        skip: usize,
    ) -> Result<Result<String, StatusCode>, BusError> {
        let resource = format!("{}/{topic}/subscriptions/{subscription}/rules", self.base());
        let url = format!("{resource}?$skip={skip}&$top={RULES_PAGE}");
        self.read_text(&self.signer().request(&url, &resource, Method::Get)?)
            .await
    }

    /// An entity's Atom description, `None` when there is no such entity.
    async fn entity_description(&self, path: &str) -> Result<Option<String>, BusError> {
        match self.describe(path).await? {
            Ok(description) => Ok(Some(description)),
            Err(StatusCode::NotFound) => Ok(None),
            Err(status) => Err(BusError::Unavailable(
                format!("the description of {path} answered {status}").into(),
            )),
        }
    }

    /// Creates an entity (Atom entry); with `update`, replaces it when it exists already.
    async fn put_entity_with(
        &self,
        path: &str,
        description: &str,
        update: bool,
    ) -> Result<(), BusError> {
        let mut request = self.signed_request(path, Method::Put)?;
        request.insert_header(
            "content-type",
            "application/atom+xml;type=entry;charset=utf-8",
        );
        request.set_body(format!(
            "<entry xmlns=\"http://www.w3.org/2005/Atom\"><content type=\"application/xml\">{description}</content></entry>"
        ));
        let response = self.execute(&request).await?;
        match response.status() {
            StatusCode::Conflict if update => {
                request.insert_header("if-match", "*");
                let response = self.execute(&request).await?;
                management_outcome(path, response.status())
            }
            status => management_outcome(path, status),
        }
    }

    async fn put_entity(&self, path: &str, description: &str) -> Result<(), BusError> {
        self.put_entity_with(path, description, false).await
    }

    /// Says so at start when the topic exists without duplicate detection (made elsewhere;
    /// it cannot be turned on later): an event relayed again after a crash then reaches
    /// subscribers twice. Handlers stay idempotent, but the promise of one delivery per
    /// event within the window is gone.
    async fn check_duplicate_detection(&self, topic: &str) -> Result<(), BusError> {
        // Without rights to read the entity there is nothing to check.
        let Ok(description) = self.describe(topic).await? else {
            return Ok(());
        };
        if !description.contains("<RequiresDuplicateDetection>true</RequiresDuplicateDetection>") {
            tracing::warn!(
                topic,
                "the topic exists without duplicate detection: an event published twice (a relay that crashed between publishing and checkpointing) reaches subscribers twice; recreate the topic with duplicate detection"
            );
        }
        Ok(())
    }

    /// Removes a topic with its subscriptions, and the queues of letters parked for them
    /// (live test suites clean up after themselves with it).
    pub async fn delete_topic(&self, topic: &str) -> Result<(), BusError> {
        let prefix = format!("{topic}.");
        let parked: Vec<String> = self
            .parked_queues
            .lock()
            .map_err(|_| backend("parked queue list poisoned"))?
            .iter()
            .filter(|queue| queue.starts_with(&prefix))
            .cloned()
            .collect();
        for queue in parked {
            self.delete_entity(&queue).await?;
        }
        self.delete_entity(topic).await
    }

    async fn execute(&self, request: &Request) -> Result<azure_core_legacy::Response, BusError> {
        execute(&self.http, request).await
    }

    async fn delete_entity(&self, path: &str) -> Result<(), BusError> {
        let request = self.signed_request(path, Method::Delete)?;
        let response = self.execute(&request).await?;
        match response.status() {
            StatusCode::NotFound => Ok(()),
            status => management_outcome(path, status),
        }
    }

    /// Gives the subscription its one rule ([`subscription_filter`]): its event types (or
    /// all) and the replays addressed to it. The new rule goes in before `$Default` (which
    /// takes everything, replays to others included) goes out, so no wanted message is
    /// ever refused while the rules change.
    async fn ensure_rules(
        &self,
        topic: &str,
        subscription: &str,
        options: &SubscriptionOptions,
    ) -> Result<(), BusError> {
        let rules = format!("{topic}/subscriptions/{subscription}/rules");
        self.put_entity_with(
            &format!("{rules}/{EVENT_TYPES_RULE}"),
            &rule_description(&subscription_filter(subscription, options)),
            true,
        )
        .await?;
        self.delete_entity(&format!("{rules}/$Default")).await
    }

    async fn send(
        &self,
        topic: &str,
        message: &Message,
        message_id: &str,
        extra: &[(&str, &str)],
    ) -> Result<(), BusError> {
        self.topic(topic)?
            .topic_sender()
            .send_message(
                &Self::body(message)?,
                Some(Self::options(message, message_id, extra)),
            )
            .await
            .map_err(send_error)
    }

    /// Locks the next letter from one of the two places a subscription's letters are kept.
    async fn next_letter(
        &self,
        topic: &str,
        subscription: &str,
        place: LetterPlace,
    ) -> Result<Option<Locked>, BusError> {
        match place {
            LetterPlace::Parked => {
                self.peek_lock_queue(&dead_letter_queue(topic, subscription))
                    .await
            }
            LetterPlace::Broker => {
                self.peek_lock(
                    topic,
                    &format!("{subscription}/$deadletterqueue"),
                    Duration::ZERO,
                )
                .await
            }
        }
    }

    /// Looks through one place for `message_id`; unlocks what it passes over.
    async fn find_letter(
        &self,
        topic: &str,
        subscription: &str,
        place: LetterPlace,
        message_id: &str,
    ) -> Result<Option<Locked>, BusError> {
        let mut passed = Vec::new();
        let mut found = None;
        while let Some(response) = self.next_letter(topic, subscription, place).await? {
            if Self::read(&response).is_ok_and(|(message, _)| message.event.id == message_id) {
                found = Some(response);
                break;
            }
            passed.push(response);
        }
        for response in passed {
            response.unlock_message().await.map_err(unavailable)?;
        }
        Ok(found)
    }
}

#[async_trait]
impl EventBus for ServiceBusBus {
    async fn ensure_subscription(
        &self,
        topic: &str,
        subscription: &str,
        options: SubscriptionOptions,
    ) -> Result<(), BusError> {
        const NS: &str = MANAGEMENT_NS;
        self.put_entity(topic, &format!("<TopicDescription {NS}><RequiresDuplicateDetection>true</RequiresDuplicateDetection></TopicDescription>"))
            .await?;
        self.check_duplicate_detection(topic).await?;
        self.put_entity(
            &format!("{topic}/subscriptions/{subscription}"),
            &format!(
                // In the order of Microsoft's SDK: Service Bus reads a description as a
                // data contract and skips elements that come out of order.
                "<SubscriptionDescription {NS}><LockDuration>{}</LockDuration><DeadLetteringOnMessageExpiration>true</DeadLetteringOnMessageExpiration><MaxDeliveryCount>{}</MaxDeliveryCount></SubscriptionDescription>",
                iso_duration(options.lock_duration),
                options.max_delivery_count
            ),
        )
        .await?;
        self.ensure_rules(topic, subscription, &options).await?;
        if let Ok(mut parked) = self.parked_queues.lock() {
            parked.insert(dead_letter_queue(topic, subscription));
        }
        // Listing letters locks and unlocks them (REST cannot peek), which counts as a
        // delivery: the queue of parked letters must never dead-letter them for that.
        self.put_entity_with(
            &dead_letter_queue(topic, subscription),
            &format!(
                "<QueueDescription {NS}><LockDuration>PT30S</LockDuration><MaxDeliveryCount>{}</MaxDeliveryCount></QueueDescription>",
                i32::MAX
            ),
            true,
        )
        .await
    }

    async fn add_type_rule(
        &self,
        topic: &str,
        subscription: &str,
        name: &str,
        event_types: &[String],
    ) -> Result<(), BusError> {
        super::type_rules::check_rule(name, event_types)?;
        // Created once: a rule of that name has these types already.
        self.put_entity(
            &format!("{topic}/subscriptions/{subscription}/rules/{name}"),
            &rule_description(&types_filter(event_types)),
        )
        .await
    }

    async fn type_rules(&self, topic: &str, subscription: &str) -> Result<Vec<String>, BusError> {
        let mut names = Vec::new();
        loop {
            let page = match self.rules_page(topic, subscription, names.len()).await? {
                Ok(feed) => rule_names(&feed),
                Err(StatusCode::NotFound) => {
                    return Err(BusError::UnknownSubscription {
                        topic: topic.to_owned(),
                        subscription: subscription.to_owned(),
                    });
                }
                Err(StatusCode::Unauthorized | StatusCode::Forbidden) => {
                    tracing::debug!(
                        topic,
                        subscription,
                        "no rights to list rules; they are provisioned"
                    );
                    return Ok(Vec::new());
                }
                Err(status) => {
                    return Err(BusError::Unavailable(
                        format!("listing the rules of {topic}/{subscription} answered {status}")
                            .into(),
                    ));
                }
            };
            let full = page.len() == RULES_PAGE;
            names.extend(page);
            if !full {
                break;
            }
        }
        names.retain(|name| name != EVENT_TYPES_RULE && name != "$Default");
        Ok(names)
    }

    async fn remove_type_rule(
        &self,
        topic: &str,
        subscription: &str,
        name: &str,
    ) -> Result<(), BusError> {
        self.delete_entity(&format!(
            "{topic}/subscriptions/{subscription}/rules/{name}"
        ))
        .await
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), BusError> {
        let id = message.event.id.clone();
        self.send(topic, &message, &id, &[]).await?;
        count(Counted::Published, 1);
        Ok(())
    }

    async fn receive(
        &self,
        topic: &str,
        subscription: &str,
        max: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        let mut deliveries = Vec::new();
        while deliveries.len() < max.max(1) {
            // Wait for the first message; take what else is there at once.
            let wait = if deliveries.is_empty() {
                LONG_POLL
            } else {
                Duration::ZERO
            };
            let Some(response) = self.peek_lock(topic, subscription, wait).await? else {
                count(Counted::EmptyReceives, 1);
                break;
            };
            count(Counted::Received, 1);
            let lock = received_broker_properties(&response)
                .map(|b| b.lock_token)
                .unwrap_or_default();
            let (message, delivery_count) = match Self::read(&response) {
                Ok(read) => read,
                Err(error) => {
                    // Not one of ours: it can never be handled; park it where people look.
                    tracing::warn!(%error, "unreadable message on {topic}/{subscription}");
                    response.unlock_message().await.map_err(unavailable)?;
                    continue;
                }
            };
            self.locks
                .lock()
                .map_err(|_| backend("lock table poisoned"))?
                .insert(lock.clone(), Arc::new(response));
            deliveries.push(Delivery {
                message,
                delivery_count,
                lock: LockToken(lock),
            });
        }
        Ok(deliveries)
    }

    async fn complete(
        &self,
        _topic: &str,
        _subscription: &str,
        lock: &LockToken,
    ) -> Result<(), BusError> {
        let response = self.take_lock(lock)?;
        response
            .delete_message()
            .await
            .map(|_| count(Counted::Settled, 1))
            .map_err(|_| BusError::LockLost)
    }

    async fn abandon(
        &self,
        _topic: &str,
        _subscription: &str,
        lock: &LockToken,
        delay: Duration,
    ) -> Result<(), BusError> {
        let response = self.take_lock(lock)?;
        // One unlock, now or after the delay.
        count(Counted::Settled, 1);
        if delay.is_zero() {
            return response
                .unlock_message()
                .await
                .map_err(|_| BusError::LockLost);
        }
        // The lock is held through the delay (or until it expires, which also returns it).
        let until = received_broker_properties(&response)
            .ok()
            .and_then(|b| b.locked_until_utc);
        let holdable = until
            .map(|until| {
                (until - OffsetDateTime::now_utc())
                    .try_into()
                    .unwrap_or(Duration::ZERO)
            })
            .unwrap_or(Duration::ZERO);
        tokio::spawn(async move {
            tokio::time::sleep(delay.min(holdable)).await;
            if let Err(error) = response.unlock_message().await {
                tracing::debug!(%error, "unlock after back-off failed; the lock expires instead");
            }
        });
        Ok(())
    }

    async fn dead_letter(
        &self,
        topic: &str,
        subscription: &str,
        lock: &LockToken,
        reason: &str,
        description: &str,
    ) -> Result<(), BusError> {
        let response = self.take_lock(lock)?;
        let (message, delivery_count) = Self::read(&response)?;
        let deliveries = delivery_count.to_string();
        let options = Self::options(
            &message,
            &message.event.id,
            &[
                (REASON, reason),
                (DESCRIPTION, description),
                (DELIVERIES, &deliveries),
            ],
        );
        self.queue(&dead_letter_queue(topic, subscription))?
            .send_message(&Self::body(&message)?, Some(options))
            .await
            .map_err(unavailable)?;
        // A send to the dead-letter queue and the delete.
        count(Counted::Published, 1);
        response
            .delete_message()
            .await
            .map(|_| count(Counted::Settled, 1))
            .map_err(|_| BusError::LockLost)
    }

    async fn dead_letters(
        &self,
        topic: &str,
        subscription: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let mut held = Vec::new();
        let mut letters = Vec::new();
        for place in LETTER_PLACES {
            while letters.len() < limit {
                let Some(response) = self.next_letter(topic, subscription, place).await? else {
                    break;
                };
                letters.push(Self::dead_letter_of(&response)?);
                held.push(response);
            }
        }
        // Looking is not taking: give every letter back.
        for response in held {
            response.unlock_message().await.map_err(unavailable)?;
        }
        Ok(letters)
    }

    async fn replay(
        &self,
        topic: &str,
        subscription: &str,
        message_id: &str,
    ) -> Result<bool, BusError> {
        let mut found = None;
        for place in LETTER_PLACES {
            found = self
                .find_letter(topic, subscription, place, message_id)
                .await?;
            if found.is_some() {
                break;
            }
        }
        let Some(response) = found else {
            return Ok(false);
        };
        let (message, _) = Self::read(&response)?;
        // A fresh message id gets past duplicate detection; the event id stays. Addressed
        // to this subscription alone: the others' rules do not take it.
        let replay_id = format!(
            "{}.replay.{}",
            message.event.id,
            uuid::Uuid::new_v4().simple()
        );
        self.send(topic, &message, &replay_id, &[(REPLAY_TO, subscription)])
            .await?;
        response.delete_message().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn counts(
        &self,
        topic: &str,
        subscription: &str,
    ) -> Result<SubscriptionCounts, BusError> {
        let Some(description) = self
            .entity_description(&format!("{topic}/subscriptions/{subscription}"))
            .await?
        else {
            return Err(BusError::UnknownSubscription {
                topic: topic.to_owned(),
                subscription: subscription.to_owned(),
            });
        };
        let count = |name: &str| {
            count_detail(&description, name)
                .ok_or_else(|| backend(format!("the subscription's description has no {name}")))
        };
        let (waiting, broker_dead) = (
            count("ActiveMessageCount")?,
            count("DeadLetterMessageCount")?,
        );
        // Letters the handlers dead-lettered wait in the parked queue (created with the first).
        let parked = match self
            .entity_description(&dead_letter_queue(topic, subscription))
            .await?
        {
            Some(queue) => count_detail(&queue, "ActiveMessageCount").ok_or_else(|| {
                backend("the parked queue's description has no ActiveMessageCount")
            })?,
            None => 0,
        };
        Ok(SubscriptionCounts {
            waiting,
            dead_lettered: broker_dead + parked,
        })
    }

    async fn discard(
        &self,
        topic: &str,
        subscription: &str,
        message_id: &str,
    ) -> Result<bool, BusError> {
        for place in LETTER_PLACES {
            if let Some(response) = self
                .find_letter(topic, subscription, place, message_id)
                .await?
            {
                response.delete_message().await.map_err(unavailable)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn ping(&self) -> Result<(), BusError> {
        let request = self.signed_request("$namespaceinfo", Method::Get)?;
        let response = self.execute(&request).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(BusError::Unavailable(
                (format!("namespace answered {}", response.status())).into(),
            ))
        }
    }
}

/// `<d2p1:NAME>N</d2p1:NAME>` of an entity's `CountDetails` (the prefix is whatever the
/// answer declares).
fn count_detail(description: &str, name: &str) -> Option<u64> {
    let (prefixed, bare) = (format!(":{name}>"), format!("<{name}>"));
    let (at, open) = description
        .find(&prefixed)
        .map(|at| (at, prefixed.len()))
        .or_else(|| description.find(&bare).map(|at| (at, bare.len())))?;
    let rest = &description[at + open..];
    rest[..rest.find('<')?].trim().parse().ok()
}

/// The production transport: `reqwest` behind the Service Bus crate's HTTP client trait.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    pub fn new(timeout: Duration) -> Result<Self, BusError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(backend)?;
        Ok(Self { client })
    }
}

fn transport_error(error: impl fmt::Display) -> azure_core_legacy::Error {
    azure_core_legacy::Error::message(azure_core_legacy::error::ErrorKind::Io, error.to_string())
}

#[async_trait]
impl HttpClient for ReqwestTransport {
    async fn execute_request(
        &self,
        request: &Request,
    ) -> azure_core_legacy::Result<azure_core_legacy::Response> {
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .map_err(transport_error)?;
        let mut outgoing = self.client.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            outgoing = outgoing.header(name.as_str(), value.as_str());
        }
        if let azure_core_legacy::Body::Bytes(bytes) = request.body() {
            outgoing = outgoing.body(bytes.to_vec());
        }
        let response = outgoing.send().await.map_err(transport_error)?;
        let status = StatusCode::try_from(response.status().as_u16()).map_err(transport_error)?;
        let mut headers = azure_core_legacy::headers::Headers::new();
        for (name, value) in response.headers() {
            if let Ok(value) = value.to_str() {
                headers.insert(name.as_str().to_owned(), value.to_owned());
            }
        }
        let body = response.bytes().await.map_err(transport_error)?;
        Ok(azure_core_legacy::Response::new(
            status,
            headers,
            Box::pin(futures::stream::once(async move { Ok(body) })),
        ))
    }
}

/// Entra ID instead of SAS: every request the crate signs is sent with a bearer token for
/// Service Bus from the credential (a managed identity on Azure) in place of the signature.
pub struct EntraTransport {
    inner: Arc<dyn HttpClient>,
    credential: Arc<dyn azure_core::credentials::TokenCredential>,
}

impl fmt::Debug for EntraTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraTransport").finish_non_exhaustive()
    }
}

impl EntraTransport {
    pub const SCOPE: &'static str = "https://servicebus.azure.net/.default";

    pub fn new(
        inner: Arc<dyn HttpClient>,
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
    ) -> Self {
        Self { inner, credential }
    }
}

#[async_trait]
impl HttpClient for EntraTransport {
    async fn execute_request(
        &self,
        request: &Request,
    ) -> azure_core_legacy::Result<azure_core_legacy::Response> {
        let token = self
            .credential
            .get_token(&[Self::SCOPE], None)
            .await
            .map_err(transport_error)?;
        let mut request = request.clone();
        request.insert_header("authorization", format!("Bearer {}", token.token.secret()));
        self.inner.execute_request(&request).await
    }
}

/// Retries what Service Bus answers with "not now": 429 (throttled), 503 (server busy),
/// 500s that say so, and transport failures (timeouts, resets), waiting what the server asks
/// (`Retry-After`, clamped) or backing off with jitter; every call the adapter makes goes
/// through it. Retried sends are absorbed by duplicate detection (same message id).
pub struct RetryingTransport {
    inner: Arc<dyn HttpClient>,
    attempts: u32,
    /// The longest wait between two attempts, whatever the server asks.
    max_delay: Duration,
}

impl fmt::Debug for RetryingTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryingTransport")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl RetryingTransport {
    pub fn new(inner: Arc<dyn HttpClient>) -> Self {
        Self {
            inner,
            attempts: 4,
            max_delay: Duration::from_secs(10),
        }
    }

    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = Duration::from_millis(200 << attempt.min(6));
        let jitter = backoff.mul_f64(rand::random::<f64>() * 0.2);
        retry_after.unwrap_or(backoff + jitter).min(self.max_delay)
    }
}

fn retry_after(response: &azure_core_legacy::Response) -> Option<Duration> {
    response
        .headers()
        .iter()
        .find(|(name, _)| name.as_str().eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, value)| value.as_str().trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(Duration::from_secs_f64)
}

#[async_trait]
impl HttpClient for RetryingTransport {
    async fn execute_request(
        &self,
        request: &Request,
    ) -> azure_core_legacy::Result<azure_core_legacy::Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.attempts;
            match self.inner.execute_request(request).await {
                Ok(response)
                    if !last
                        && matches!(
                            response.status(),
                            StatusCode::TooManyRequests
                                | StatusCode::ServiceUnavailable
                                | StatusCode::InternalServerError
                        ) =>
                {
                    let wait = self.delay(attempt, retry_after(&response));
                    tracing::debug!(status = %response.status(), ?wait, attempt, "Service Bus asked to retry");
                    tokio::time::sleep(wait).await;
                }
                Err(error)
                    if !last && matches!(error.kind(), azure_core_legacy::error::ErrorKind::Io) =>
                {
                    let wait = self.delay(attempt, None);
                    tracing::debug!(%error, ?wait, attempt, "Service Bus call failed in transport; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{count_detail, rule_names};

    #[test]
    fn rule_names_are_read_from_a_feed_of_rules() {
        // The shape Service Bus answers a GET of a subscription's rules with (trimmed).
        let feed = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">Rules</title><id>https://ns.servicebus.windows.net/t/subscriptions/s/rules</id><entry><id>https://ns.servicebus.windows.net/t/subscriptions/s/rules/event-types</id><title type="text">event-types</title><content type="application/xml"><RuleDescription><Filter i:type="SqlFilter"><SqlExpression>user.ReplayTo = 's'</SqlExpression></Filter><CreatedAt>2026-11-27T12:00:00.1234567Z</CreatedAt><Name>event-types</Name></RuleDescription></content></entry><entry><title type="text">wants-0a1b2c3d4e5f-2990000</title><content/></entry></feed>"#;
        assert_eq!(
            rule_names(feed),
            vec![
                "event-types".to_owned(),
                "wants-0a1b2c3d4e5f-2990000".to_owned()
            ]
        );
        assert!(rule_names("<feed/>").is_empty());
    }

    #[test]
    fn the_counts_are_read_from_a_subscription_description() {
        // The shape Service Bus answers a GET of a subscription with (trimmed).
        let description = r#"<entry xmlns="http://www.w3.org/2005/Atom"><title type="text">catalog</title><content type="application/xml"><SubscriptionDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><LockDuration>PT1M</LockDuration><MessageCount>12</MessageCount><CountDetails xmlns:d2p1="http://schemas.microsoft.com/netservices/2011/06/servicebus"><d2p1:ActiveMessageCount>7</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>5</d2p1:DeadLetterMessageCount><d2p1:ScheduledMessageCount>0</d2p1:ScheduledMessageCount></CountDetails></SubscriptionDescription></content></entry>"#;
        assert_eq!(count_detail(description, "ActiveMessageCount"), Some(7));
        assert_eq!(count_detail(description, "DeadLetterMessageCount"), Some(5));
        assert_eq!(
            count_detail(
                "<CountDetails><ActiveMessageCount>2</ActiveMessageCount>",
                "ActiveMessageCount"
            ),
            Some(2)
        );
        assert_eq!(count_detail("<entry/>", "ActiveMessageCount"), None);
    }
}
