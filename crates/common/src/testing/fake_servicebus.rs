//! An in-process Service Bus that follows the documented REST data plane: send to a topic
//! (fan-out to subscriptions, duplicate detection on MessageId, scheduled enqueue) or a
//! queue; peek-lock, unlock, renew-lock and delete on lock URLs; dead-lettering after the
//! subscription's MaxDeliveryCount into `$deadletterqueue`; entity creation by Atom PUT;
//! every request checked for a valid SAS token. Plugged in as the crate's HTTP client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core_legacy::headers::Headers;
use azure_core_legacy::{Body, HttpClient, Method, Request, Response, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
struct Stored {
    sequence: i64,
    message_id: String,
    body: String,
    custom: Vec<(String, String)>,
    correlation_id: Option<String>,
    label: Option<String>,
    enqueued: time::OffsetDateTime,
    available_at: Instant,
    delivery_count: u32,
    lock: Option<(String, Instant)>,
}

/// A subscription rule's filter: everything, or the forms the adapter writes: its own rule
/// (its event types, all, or none, when not a replay; replays addressed to it) and type
/// rules (their types, when not a replay).
#[derive(Debug, Clone)]
enum Filter {
    True,
    Subscription {
        /// Types taken when not a replay; `None`: every one.
        labels: Option<Vec<String>>,
        /// The subscription whose replays are taken.
        replay_to: Option<String>,
    },
}

fn unquote(text: &str) -> Option<String> {
    let text = text.trim();
    text.strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
        .map(|inner| inner.replace("''", "'"))
}

fn labels(sql: &str) -> Option<Vec<String>> {
    let list = sql
        .strip_prefix("sys.Label IN (")?
        .strip_suffix(") AND user.ReplayTo IS NULL")?;
    list.split(", ").map(unquote).collect()
}

impl Filter {
    /// The SQL filters the adapter writes; anything else is a bad request.
    fn parse(sql: &str) -> Option<Self> {
        let sql = sql.trim();
        if sql == "1=1" {
            return Some(Filter::True);
        }
        if let Some(labels) = labels(sql) {
            return Some(Filter::Subscription {
                labels: Some(labels),
                replay_to: None,
            });
        }
        if let Some(own) = sql.strip_prefix("user.ReplayTo = ") {
            return Some(Filter::Subscription {
                labels: Some(Vec::new()),
                replay_to: Some(unquote(own)?),
            });
        }
        let (left, own) = sql.rsplit_once(" OR user.ReplayTo = ")?;
        let replay_to = Some(unquote(own)?);
        if left == "user.ReplayTo IS NULL" {
            return Some(Filter::Subscription {
                labels: None,
                replay_to,
            });
        }
        let labels = labels(left.strip_prefix('(')?.strip_suffix(')')?)?;
        Some(Filter::Subscription {
            labels: Some(labels),
            replay_to,
        })
    }

    fn matches(&self, label: Option<&str>, replay_to: Option<&str>) -> bool {
        match self {
            Filter::True => true,
            Filter::Subscription {
                labels,
                replay_to: own,
            } => match replay_to {
                Some(target) => own.as_deref() == Some(target),
                None => labels
                    .as_ref()
                    .is_none_or(|labels| label.is_some_and(|l| labels.iter().any(|x| x == l))),
            },
        }
    }
}

#[derive(Debug)]
struct Entity {
    lock_duration: Duration,
    max_delivery_count: u32,
    messages: Vec<Stored>,
    dead: Vec<Stored>,
    /// Subscriptions only: a message is copied in when any rule matches.
    rules: HashMap<String, Filter>,
}

impl Entity {
    fn new(lock_duration: Duration, max_delivery_count: u32) -> Self {
        Self {
            lock_duration,
            max_delivery_count,
            messages: Vec::new(),
            dead: Vec::new(),
            rules: HashMap::from([("$Default".to_owned(), Filter::True)]),
        }
    }

    fn accepts(&self, message: &Stored) -> bool {
        let replay_to = message
            .custom
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("ReplayTo"))
            .and_then(|(_, value)| serde_json::from_str::<String>(value).ok());
        self.rules
            .values()
            .any(|rule| rule.matches(message.label.as_deref(), replay_to.as_deref()))
    }
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, HashMap<String, Entity>>,
    /// Topics created with duplicate detection.
    deduplicating: std::collections::HashSet<String>,
    seen: HashMap<(String, String), Instant>,
    queues: HashMap<String, Entity>,
    next_sequence: i64,
}

impl State {
    fn subscription(&mut self, topic: &str, subscription: &str) -> Option<&mut Entity> {
        self.topics
            .get_mut(topic)
            .and_then(|subscriptions| subscriptions.get_mut(subscription))
    }
}

#[derive(Debug)]
pub struct FakeServiceBus {
    pub namespace: String,
    pub policy: String,
    pub key: String,
    state: Mutex<State>,
    pub refused: AtomicUsize,
    /// Messages accepted by send.
    pub sent: AtomicUsize,
    /// Peek-locks that asked to wait for a message (the REST long poll), and those that
    /// did not.
    pub long_polls: AtomicUsize,
    pub short_polls: AtomicUsize,
    /// Faults to answer with before serving requests normally: (status, Retry-After).
    faults: Mutex<std::collections::VecDeque<(StatusCode, Option<u64>)>>,
    /// Requests answered with a fault.
    pub faulted: AtomicUsize,
}

fn respond(
    status: StatusCode,
    headers: Headers,
    body: String,
) -> azure_core_legacy::Result<Response> {
    let bytes = bytes::Bytes::from(body);
    Ok(Response::new(
        status,
        headers,
        Box::pin(futures::stream::once(async move { Ok(bytes) })),
    ))
}

fn status(status: StatusCode) -> azure_core_legacy::Result<Response> {
    respond(status, Headers::new(), String::new())
}

/// The order of a description's elements in Microsoft's SDK; Service Bus skips an element
/// that comes after one it should precede (a data contract), so the fake refuses it.
const SUBSCRIPTION_ELEMENTS: &[&str] = &[
    "LockDuration",
    "RequiresSession",
    "DefaultMessageTimeToLive",
    "DeadLetteringOnMessageExpiration",
    "DeadLetteringOnFilterEvaluationExceptions",
    "MaxDeliveryCount",
    "EnableBatchedOperations",
];
const QUEUE_ELEMENTS: &[&str] = &[
    "LockDuration",
    "MaxSizeInMegabytes",
    "RequiresDuplicateDetection",
    "RequiresSession",
    "DefaultMessageTimeToLive",
    "DeadLetteringOnMessageExpiration",
    "DuplicateDetectionHistoryTimeWindow",
    "MaxDeliveryCount",
];

fn in_contract_order(xml: &str, order: &[&str]) -> bool {
    let positions: Vec<usize> = order
        .iter()
        .filter_map(|name| xml.find(&format!("<{name}>")))
        .collect();
    positions.windows(2).all(|pair| pair[0] < pair[1])
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

fn iso_seconds(text: &str) -> Option<Duration> {
    let seconds: f64 = text.strip_prefix("PT")?.strip_suffix('S')?.parse().ok()?;
    Some(Duration::from_secs_f64(seconds))
}

impl Default for FakeServiceBus {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeServiceBus {
    /// Answers the next `count` requests with `status` (and `Retry-After` seconds): a
    /// throttled or busy namespace.
    pub fn inject_faults(&self, count: usize, status: StatusCode, retry_after: Option<u64>) {
        let mut faults = self.faults.lock().unwrap();
        for _ in 0..count {
            faults.push_back((status, retry_after));
        }
    }

    /// A topic made elsewhere, without duplicate detection.
    pub fn create_topic_without_duplicate_detection(&self, name: &str) {
        self.state
            .lock()
            .unwrap()
            .topics
            .insert(name.to_owned(), HashMap::new());
    }

    /// Whether no topic or queue of this name exists.
    pub fn has_no_entity(&self, name: &str) -> bool {
        let state = self.state.lock().unwrap();
        !state.topics.contains_key(name) && !state.queues.contains_key(name)
    }

    /// Numbers messages from `first` on (partitioned entities use 64-bit numbers).
    pub fn with_sequence_from(self, first: i64) -> Self {
        if let Ok(mut state) = self.state.lock() {
            state.next_sequence = first - 1;
        }
        self
    }

    pub fn new() -> Self {
        Self {
            namespace: "fake-namespace".into(),
            policy: "RootManageSharedAccessKey".into(),
            key: "fake-key-0123456789".into(),
            state: Mutex::new(State::default()),
            refused: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            long_polls: AtomicUsize::new(0),
            short_polls: AtomicUsize::new(0),
            faults: Mutex::new(std::collections::VecDeque::new()),
            faulted: AtomicUsize::new(0),
        }
    }

    /// SAS check as Service Bus does it: right policy, not expired, resource a prefix of
    /// the URL, signature over `<encoded resource>\n<expiry>` with the key.
    fn authorized(&self, request: &Request) -> bool {
        let Some(header) = request
            .headers()
            .iter()
            .find(|(n, _)| n.as_str() == "authorization")
            .map(|(_, v)| v.as_str().to_owned())
        else {
            return false;
        };
        let Some(fields) = header.strip_prefix("SharedAccessSignature ") else {
            return false;
        };
        let pairs: HashMap<String, String> = url::form_urlencoded::parse(fields.as_bytes())
            .into_owned()
            .collect();
        let (Some(sr), Some(sig), Some(se), Some(skn)) = (
            pairs.get("sr"),
            pairs.get("sig"),
            pairs.get("se"),
            pairs.get("skn"),
        ) else {
            return false;
        };
        let not_expired = se
            .parse::<i64>()
            .is_ok_and(|se| se > time::OffsetDateTime::now_utc().unix_timestamp());
        let encoded: String = url::form_urlencoded::byte_serialize(sr.as_bytes()).collect();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.as_bytes()).unwrap();
        mac.update(format!("{encoded}\n{se}").as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let url = request.url().as_str();
        *skn == self.policy
            && not_expired
            && &expected == sig
            && url.starts_with(sr.split('?').next().unwrap_or_default())
    }

    fn peek_lock(&self, state: &mut State, path: &[&str]) -> azure_core_legacy::Result<Response> {
        let now = Instant::now();
        let (entity, location_base) = match path {
            [
                topic,
                "subscriptions",
                subscription,
                "$deadletterqueue",
                "messages",
                "head",
            ] => {
                let Some(entity) = state.subscription(topic, subscription) else {
                    return status(StatusCode::NotFound);
                };
                let lock = entity.lock_duration;
                // The dead-letter queue: no delivery limit.
                let Some(message) = entity
                    .dead
                    .iter_mut()
                    .find(|m| m.lock.as_ref().is_none_or(|(_, until)| *until <= now))
                else {
                    return status(StatusCode::NoContent);
                };
                message.delivery_count += 1;
                message.lock = Some((uuid::Uuid::new_v4().to_string(), now + lock));
                let message = message.clone();
                return self.locked_response(
                    &format!("{topic}/subscriptions/{subscription}/$deadletterqueue"),
                    &message,
                    &[],
                );
            }
            [topic, "subscriptions", subscription, "messages", "head"] => {
                match state.subscription(topic, subscription) {
                    Some(entity) => (entity, format!("{topic}/subscriptions/{subscription}")),
                    None => return status(StatusCode::NotFound),
                }
            }
            [queue, "messages", "head"] => match state.queues.get_mut(*queue) {
                Some(entity) => (entity, (*queue).to_owned()),
                None => return status(StatusCode::NotFound),
            },
            _ => return status(StatusCode::BadRequest),
        };
        loop {
            let Some(index) = entity.messages.iter().position(|m| {
                m.available_at <= now && m.lock.as_ref().is_none_or(|(_, until)| *until <= now)
            }) else {
                return status(StatusCode::NoContent);
            };
            if entity.messages[index].delivery_count >= entity.max_delivery_count {
                let mut dead = entity.messages.remove(index);
                dead.lock = None;
                dead.custom.push((
                    "DeadLetterReason".into(),
                    "\"MaxDeliveryCountExceeded\"".into(),
                ));
                dead.custom.push((
                    "DeadLetterErrorDescription".into(),
                    "\"Message could not be consumed after maximum delivery attempts.\"".into(),
                ));
                entity.dead.push(dead);
                continue;
            }
            let lock = entity.lock_duration;
            let message = &mut entity.messages[index];
            message.delivery_count += 1;
            message.lock = Some((uuid::Uuid::new_v4().to_string(), now + lock));
            let message = message.clone();
            return self.locked_response(&location_base, &message, &[]);
        }
    }

    fn locked_response(
        &self,
        entity_path: &str,
        message: &Stored,
        _extra: &[(String, String)],
    ) -> azure_core_legacy::Result<Response> {
        let (token, until) = message
            .lock
            .clone()
            .unwrap_or_else(|| (String::new(), Instant::now()));
        let locked_until =
            time::OffsetDateTime::now_utc() + until.saturating_duration_since(Instant::now());
        let rfc2822 = |at: time::OffsetDateTime| {
            at.format(&time::format_description::well_known::Rfc2822)
                .unwrap_or_default()
        };
        let mut broker = serde_json::json!({
            "DeliveryCount": message.delivery_count,
            "EnqueuedSequenceNumber": message.sequence,
            "EnqueuedTimeUtc": rfc2822(message.enqueued),
            "LockToken": token,
            "LockedUntilUtc": rfc2822(locked_until),
            "MessageId": message.message_id,
            "SequenceNumber": message.sequence,
            "State": "Active",
            "TimeToLive": 922337203685.4775,
        });
        if let Some(id) = &message.correlation_id {
            broker["CorrelationId"] = serde_json::json!(id);
        }
        if let Some(label) = &message.label {
            broker["Label"] = serde_json::json!(label);
        }
        let mut headers = Headers::new();
        headers.insert("brokerproperties", broker.to_string());
        headers.insert(
            "location",
            format!(
                "https://{}.servicebus.windows.net/{entity_path}/messages/{}/{token}",
                self.namespace, message.message_id
            ),
        );
        for (name, value) in &message.custom {
            headers.insert(name.to_lowercase(), value.clone());
        }
        respond(StatusCode::Created, headers, message.body.clone())
    }

    /// The entity (messages or dead letters) a lock URL points into.
    fn settle(
        &self,
        state: &mut State,
        path: &[&str],
        method: &Method,
    ) -> azure_core_legacy::Result<Response> {
        let now = Instant::now();
        let (list, token) = match path {
            [
                topic,
                "subscriptions",
                subscription,
                "$deadletterqueue",
                "messages",
                _id,
                token,
            ] => match state.subscription(topic, subscription) {
                Some(entity) => (&mut entity.dead, *token),
                None => return status(StatusCode::Gone),
            },
            [topic, "subscriptions", subscription, "messages", _id, token] => {
                match state.subscription(topic, subscription) {
                    Some(entity) => (&mut entity.messages, *token),
                    None => return status(StatusCode::Gone),
                }
            }
            [queue, "messages", _id, token] => match state.queues.get_mut(*queue) {
                Some(entity) => (&mut entity.messages, *token),
                None => return status(StatusCode::Gone),
            },
            _ => return status(StatusCode::BadRequest),
        };
        let Some(index) = list.iter().position(|m| {
            m.lock
                .as_ref()
                .is_some_and(|(held, until)| held == token && *until > now)
        }) else {
            return status(StatusCode::NotFound);
        };
        match method {
            Method::Delete => {
                list.remove(index);
            }
            Method::Put => list[index].lock = None,
            Method::Post => {
                // Renew: the lock lasts as long again from now.
                if let Some((_, until)) = list[index].lock.as_mut() {
                    *until = now + Duration::from_secs(30);
                }
            }
            _ => return status(StatusCode::MethodNotAllowed),
        }
        status(StatusCode::Ok)
    }

    fn send(
        &self,
        state: &mut State,
        entity: &str,
        request: &Request,
    ) -> azure_core_legacy::Result<Response> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let body = match request.body() {
            Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        };
        if body.len() > crate::bus::MAX_MESSAGE_BYTES {
            return status(StatusCode::PayloadTooLarge);
        }
        let broker: serde_json::Value = request
            .headers()
            .iter()
            .find(|(n, _)| n.as_str() == "brokerproperties")
            .and_then(|(_, v)| serde_json::from_str(v.as_str()).ok())
            .unwrap_or_default();
        let message_id = broker["MessageId"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let now = Instant::now();
        let available_at = broker["ScheduledEnqueueTimeUtc"]
            .as_str()
            .and_then(|at| {
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc2822).ok()
            })
            .map(|at| {
                now + (at - time::OffsetDateTime::now_utc())
                    .try_into()
                    .unwrap_or(Duration::ZERO)
            })
            .unwrap_or(now);
        let custom: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter(|(n, _)| {
                !matches!(
                    n.as_str(),
                    "authorization" | "brokerproperties" | "content-type" | "content-length"
                )
            })
            .map(|(n, v)| (n.as_str().to_owned(), v.as_str().to_owned()))
            .collect();
        state.next_sequence += 1;
        let stored = Stored {
            sequence: state.next_sequence,
            message_id: message_id.clone(),
            body,
            custom,
            correlation_id: broker["CorrelationId"].as_str().map(str::to_owned),
            label: broker["Label"].as_str().map(str::to_owned),
            enqueued: time::OffsetDateTime::now_utc(),
            available_at,
            delivery_count: 0,
            lock: None,
        };
        if let Some(queue) = state.queues.get_mut(entity) {
            queue.messages.push(stored);
            return status(StatusCode::Created);
        }
        let key = (entity.to_owned(), message_id);
        if state
            .seen
            .get(&key)
            .is_some_and(|at| at.elapsed() < DUPLICATE_WINDOW)
        {
            return status(StatusCode::Created);
        }
        let Some(subscriptions) = state.topics.get_mut(entity) else {
            return status(StatusCode::NotFound);
        };
        for subscription in subscriptions.values_mut() {
            if subscription.accepts(&stored) {
                subscription.messages.push(stored.clone());
            }
        }
        state.seen.insert(key, now);
        status(StatusCode::Created)
    }

    fn create(
        &self,
        state: &mut State,
        path: &[&str],
        request: &Request,
    ) -> azure_core_legacy::Result<Response> {
        let xml = match request.body() {
            Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        };
        match path {
            [topic, "subscriptions", subscription, "rules", rule] => {
                let Some(entity) = state.subscription(topic, subscription) else {
                    return status(StatusCode::NotFound);
                };
                let update = request
                    .headers()
                    .iter()
                    .any(|(n, _)| n.as_str() == "if-match");
                if entity.rules.contains_key(*rule) && !update {
                    return status(StatusCode::Conflict);
                }
                let Some(filter) = tag(&xml, "SqlExpression")
                    .map(|sql| {
                        sql.replace("&lt;", "<")
                            .replace("&gt;", ">")
                            .replace("&amp;", "&")
                    })
                    .and_then(|sql| Filter::parse(&sql))
                else {
                    return status(StatusCode::BadRequest);
                };
                entity.rules.insert((*rule).to_owned(), filter);
                status(StatusCode::Created)
            }
            [_, "subscriptions", _] if !in_contract_order(&xml, SUBSCRIPTION_ELEMENTS) => {
                status(StatusCode::BadRequest)
            }
            [topic, "subscriptions", subscription] => {
                let Some(subscriptions) = state.topics.get_mut(*topic) else {
                    return status(StatusCode::NotFound);
                };
                if subscriptions.contains_key(*subscription) {
                    return status(StatusCode::Conflict);
                }
                let lock = tag(&xml, "LockDuration")
                    .and_then(iso_seconds)
                    .unwrap_or(Duration::from_secs(60));
                let max = tag(&xml, "MaxDeliveryCount")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(10);
                subscriptions.insert((*subscription).to_owned(), Entity::new(lock, max));
                status(StatusCode::Created)
            }
            [_] if xml.contains("<QueueDescription")
                && !in_contract_order(&xml, QUEUE_ELEMENTS) =>
            {
                status(StatusCode::BadRequest)
            }
            [name] if xml.contains("<QueueDescription") => {
                let update = request
                    .headers()
                    .iter()
                    .any(|(n, _)| n.as_str() == "if-match");
                // Service Bus's defaults for what the description leaves out.
                let lock = tag(&xml, "LockDuration")
                    .and_then(iso_seconds)
                    .unwrap_or(Duration::from_secs(60));
                let max = tag(&xml, "MaxDeliveryCount")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(10);
                match state.queues.get_mut(*name) {
                    Some(queue) if update => {
                        queue.lock_duration = lock;
                        queue.max_delivery_count = max;
                        status(StatusCode::Ok)
                    }
                    Some(_) => status(StatusCode::Conflict),
                    None => {
                        state
                            .queues
                            .insert((*name).to_owned(), Entity::new(lock, max));
                        status(StatusCode::Created)
                    }
                }
            }
            [name] => {
                if state.topics.contains_key(*name) {
                    return status(StatusCode::Conflict);
                }
                state.topics.insert((*name).to_owned(), HashMap::new());
                if tag(&xml, "RequiresDuplicateDetection") == Some("true") {
                    state.deduplicating.insert((*name).to_owned());
                }
                status(StatusCode::Created)
            }
            _ => status(StatusCode::BadRequest),
        }
    }
}

#[async_trait]
impl HttpClient for FakeServiceBus {
    async fn execute_request(&self, request: &Request) -> azure_core_legacy::Result<Response> {
        let expected_host = format!("{}.servicebus.windows.net", self.namespace);
        if request.url().host_str() != Some(expected_host.as_str()) {
            return status(StatusCode::NotFound);
        }
        if let Some((status, retry_after)) = self.faults.lock().unwrap().pop_front() {
            self.faulted.fetch_add(1, Ordering::SeqCst);
            let mut headers = Headers::new();
            if let Some(seconds) = retry_after {
                headers.insert("retry-after", seconds.to_string());
            }
            return respond(status, headers, String::new());
        }
        if !self.authorized(request) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return status(StatusCode::Unauthorized);
        }
        let path: Vec<String> = request
            .url()
            .path_segments()
            .map(|segments| {
                segments
                    .map(|s| {
                        url::form_urlencoded::parse(s.as_bytes())
                            .map(|(k, _)| k.into_owned())
                            .collect::<String>()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut state = self.state.lock().unwrap();
        match (request.method(), path.as_slice()) {
            (Method::Get, ["$namespaceinfo"]) => status(StatusCode::Ok),
            (Method::Get, [name]) if state.topics.contains_key(*name) => respond(
                StatusCode::Ok,
                Headers::new(),
                format!(
                    "<entry xmlns=\"http://www.w3.org/2005/Atom\"><content type=\"application/xml\"><TopicDescription><RequiresDuplicateDetection>{}</RequiresDuplicateDetection></TopicDescription></content></entry>",
                    state.deduplicating.contains(*name)
                ),
            ),
            (Method::Get, [name]) if state.queues.contains_key(*name) => respond(
                StatusCode::Ok,
                Headers::new(),
                format!(
                    "<entry xmlns=\"http://www.w3.org/2005/Atom\"><content type=\"application/xml\"><QueueDescription><CountDetails xmlns:d2p1=\"http://schemas.microsoft.com/netservices/2011/06/servicebus\"><d2p1:ActiveMessageCount>{}</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>{}</d2p1:DeadLetterMessageCount></CountDetails></QueueDescription></content></entry>",
                    state.queues[*name].messages.len(),
                    state.queues[*name].dead.len()
                ),
            ),
            (Method::Get, [topic, "subscriptions", subscription, "rules"]) => {
                let query = |name: &str| {
                    request
                        .url()
                        .query_pairs()
                        .find(|(key, _)| key == name)
                        .and_then(|(_, value)| value.parse::<usize>().ok())
                };
                let (skip, top) = (query("$skip").unwrap_or(0), query("$top").unwrap_or(100));
                match state.subscription(topic, subscription) {
                    Some(entity) => {
                        let mut names: Vec<&String> = entity.rules.keys().collect();
                        names.sort();
                        let entries: String = names
                            .into_iter()
                            .skip(skip)
                            .take(top)
                            .map(|name| {
                                format!("<entry><title type=\"text\">{name}</title><content type=\"application/xml\"><RuleDescription/></content></entry>")
                            })
                            .collect();
                        respond(
                            StatusCode::Ok,
                            Headers::new(),
                            format!(
                                "<feed xmlns=\"http://www.w3.org/2005/Atom\"><title type=\"text\">Rules</title>{entries}</feed>"
                            ),
                        )
                    }
                    None => status(StatusCode::NotFound),
                }
            }
            (Method::Get, [topic, "subscriptions", subscription]) => {
                match state.subscription(topic, subscription) {
                    Some(entity) => respond(
                        StatusCode::Ok,
                        Headers::new(),
                        format!(
                            "<entry xmlns=\"http://www.w3.org/2005/Atom\"><content type=\"application/xml\"><SubscriptionDescription><CountDetails xmlns:d2p1=\"http://schemas.microsoft.com/netservices/2011/06/servicebus\"><d2p1:ActiveMessageCount>{}</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>{}</d2p1:DeadLetterMessageCount></CountDetails></SubscriptionDescription></content></entry>",
                            entity.messages.len(),
                            entity.dead.len()
                        ),
                    ),
                    None => status(StatusCode::NotFound),
                }
            }
            (Method::Put, entity)
                if entity.len() == 1
                    || (entity.len() == 3 && entity[1] == "subscriptions")
                    || (entity.len() == 5
                        && entity[1] == "subscriptions"
                        && entity[3] == "rules") =>
            {
                self.create(&mut state, entity, request)
            }
            (Method::Delete, [name]) => {
                let removed =
                    state.topics.remove(*name).is_some() || state.queues.remove(*name).is_some();
                status(if removed {
                    StatusCode::Ok
                } else {
                    StatusCode::NotFound
                })
            }
            (Method::Delete, [topic, "subscriptions", subscription, "rules", rule]) => {
                let removed = state
                    .subscription(topic, subscription)
                    .and_then(|entity| entity.rules.remove(*rule));
                status(if removed.is_some() {
                    StatusCode::Ok
                } else {
                    StatusCode::NotFound
                })
            }
            (Method::Post, [.., "messages", "head"]) => {
                let waits = request
                    .url()
                    .query_pairs()
                    .any(|(name, value)| name == "timeout" && value != "0");
                if waits {
                    self.long_polls.fetch_add(1, Ordering::SeqCst);
                } else {
                    self.short_polls.fetch_add(1, Ordering::SeqCst);
                }
                self.peek_lock(&mut state, &path)
            }
            (Method::Post, [entity, "messages"]) => self.send(&mut state, entity, request),
            (method, [.., "messages", _, _]) => self.settle(&mut state, &path, method),
            _ => status(StatusCode::BadRequest),
        }
    }
}
