//! The service runtime: the outbox relay on the change feed (leases, take-over, parking)
//! on every store adapter, and a service that consumes two topics with typed handlers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::bus::embedded::EmbeddedBus;
use common::bus::outbox::{OutboxRelay, PARKED_KIND, RELAY_READER, outbox_op};
use common::bus::worker::HandlerError;
use common::bus::{CloudEvent, SharedBus, SubscriptionOptions};
use common::config::{ChangeFeedSettings, Settings};
use common::events::{EventContract, EventType};
use common::runtime::{
    Dispatcher, FeedReader, FeedSignal, Handles, Launch, Runtime, ServiceDescriptor,
    SubscriptionSpec,
};
use common::store::{Query, QueryScope, SharedStore};
use common::testing::eventually;
use serde_json::json;

use crate::store_contract::{THINGS, cosmos_emulator, embedded, unique};

const TOPIC: &str = "relay-events";

fn bus() -> (SharedBus, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(&dir.path().join("bus.db")).unwrap();
    (Arc::new(bus), dir)
}

fn relay(store: &SharedStore, bus: &SharedBus, owner: &str) -> FeedReader {
    FeedReader {
        store: store.clone(),
        container: THINGS,
        reader: RELAY_READER,
        owner: owner.to_owned(),
        settings: ChangeFeedSettings {
            poll_interval_ms: 50,
            lease_seconds: 1,
            batch_size: 5,
            instance_id: String::new(),
        },
        signal: FeedSignal::default(),
        handler: OutboxRelay::new(store.clone(), bus.clone(), THINGS),
    }
}

fn event(n: usize) -> CloudEvent {
    CloudEvent::new(
        "tests",
        "tests.relayed.v1",
        format!("n-{n}"),
        json!({"n": n}),
    )
}

/// Writes `count` outbox entries over a few partitions; returns their event ids.
async fn fill_outbox(store: &SharedStore, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let event = event(n);
        ids.push(event.id.clone());
        let pk = format!("p-{}", n % 4);
        store
            .batch(THINGS, &pk, vec![outbox_op(TOPIC, &event)])
            .await
            .unwrap();
    }
    ids
}

/// Receives and completes everything the sink holds now, counting each event id.
async fn drain(bus: &SharedBus, seen: &mut BTreeMap<String, usize>) {
    loop {
        let deliveries = bus.receive(TOPIC, "sink", 100).await.unwrap();
        if deliveries.is_empty() {
            return;
        }
        for delivery in deliveries {
            *seen.entry(delivery.message.event.id.clone()).or_default() += 1;
            bus.complete(TOPIC, "sink", &delivery.lock).await.unwrap();
        }
    }
}

/// Starts one relay and waits until the outbox is empty; the relay goes on until the sender
/// is dropped or the task aborted.
async fn relay_everything(
    store: &SharedStore,
    bus: &SharedBus,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Sender<bool>,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = relay(store, bus, "only").spawn(stopped);
    let done = eventually(Duration::from_secs(20), || async {
        outbox_left(store, "outbox").await == 0
    })
    .await;
    assert!(done, "the relay got stuck");
    (task, stop)
}

async fn outbox_left(store: &SharedStore, kind: &str) -> usize {
    store
        .query(
            THINGS,
            &Query::new(QueryScope::AllPartitions, 1000).filter("kind", kind),
        )
        .await
        .unwrap()
        .items
        .len()
}

async fn two_relays_one_killed_midway_relay_every_entry_once(store: SharedStore) {
    let (bus, _dir) = bus();
    bus.ensure_subscription(TOPIC, "sink", SubscriptionOptions::default())
        .await
        .unwrap();
    let mut ids = fill_outbox(&store, 60).await;
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let first = relay(&store, &bus, "first").spawn(stopped.clone());
    let second = relay(&store, &bus, "second").spawn(stopped.clone());
    let mut seen = BTreeMap::new();
    // Kill whichever holds the lease once it has relayed part of the outbox.
    let started = eventually(Duration::from_secs(20), || async {
        outbox_left(&store, "outbox").await < 50
    })
    .await;
    assert!(started, "nothing was relayed");
    let lease = store
        .read(
            common::runtime::LEASES,
            "things.outbox-relay",
            "things.outbox-relay",
        )
        .await
        .unwrap()
        .expect("a lease document");
    let owner = lease.body["owner"].as_str().unwrap().to_owned();
    let survivor = if owner == "first" {
        first.abort();
        second
    } else {
        second.abort();
        first
    };
    // Entries written after the kill: only the survivor, once it takes the lease over, can
    // relay them (the killed one may have finished the first ones before it died).
    ids.extend(fill_outbox(&store, 20).await);
    let all = eventually(Duration::from_secs(30), || async {
        outbox_left(&store, "outbox").await == 0
    })
    .await;
    assert!(all, "the survivor did not relay what was left");
    drain(&bus, &mut seen).await;
    let received: Vec<&String> = seen.keys().collect();
    let mut expected: Vec<&String> = ids.iter().collect();
    expected.sort();
    assert_eq!(received, expected, "every entry arrives");
    assert!(
        seen.values().all(|n| *n == 1),
        "an event arrived twice: {seen:?}"
    );
    let lease = store
        .read(
            common::runtime::LEASES,
            "things.outbox-relay",
            "things.outbox-relay",
        )
        .await
        .unwrap()
        .unwrap();
    assert_ne!(lease.body["owner"], owner, "the lease was taken over");
    survivor.abort();
}

/// A page holding entries for two topics, interleaved: each topic's subscribers get its
/// events in the order they were written.
async fn entries_reach_each_topic_in_the_order_written(store: SharedStore) {
    let (bus, _dir) = bus();
    let other = "relay-other-events";
    for topic in [TOPIC, other] {
        bus.ensure_subscription(topic, "sink", SubscriptionOptions::default())
            .await
            .unwrap();
    }
    let pk = unique("ordered");
    let mut written: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for n in 0..12 {
        let topic = if n % 3 == 0 { other } else { TOPIC };
        let event = event(1_000 + n);
        written.entry(topic).or_default().push(event.id.clone());
        store
            .batch(THINGS, &pk, vec![outbox_op(topic, &event)])
            .await
            .unwrap();
    }
    let (task, _stop) = relay_everything(&store, &bus).await;
    for (topic, expected) in written {
        let received: Vec<String> = bus
            .receive(topic, "sink", 100)
            .await
            .unwrap()
            .into_iter()
            .map(|delivery| delivery.message.event.id)
            .collect();
        assert_eq!(received, expected, "{topic}");
    }
    task.abort();
}

async fn a_permanent_failure_is_parked_and_the_rest_go_on(store: SharedStore) {
    let (bus, _dir) = bus();
    bus.ensure_subscription(TOPIC, "sink", SubscriptionOptions::default())
        .await
        .unwrap();
    let pk = unique("p");
    let fine = event(1);
    let huge = CloudEvent::new(
        "tests",
        "tests.relayed.v1",
        "huge",
        json!({"blob": "x".repeat(common::bus::MAX_MESSAGE_BYTES)}),
    );
    let after = event(2);
    for event in [&fine, &huge, &after] {
        store
            .batch(THINGS, &pk, vec![outbox_op(TOPIC, event)])
            .await
            .unwrap();
    }
    store
        .create(
            THINGS,
            &pk,
            "outbox-unreadable",
            json!({"kind": "outbox", "topic": 5}),
        )
        .await
        .unwrap();
    let (task, _stop) = relay_everything(&store, &bus).await;
    let mut seen = BTreeMap::new();
    drain(&bus, &mut seen).await;
    assert_eq!(seen.len(), 2);
    assert!(seen.contains_key(&fine.id) && seen.contains_key(&after.id));
    assert_eq!(outbox_left(&store, PARKED_KIND).await, 2);
    let parked = store
        .read(THINGS, &pk, &format!("outbox-{}", huge.id))
        .await
        .unwrap()
        .unwrap();
    assert!(
        parked.body["parkedReason"]
            .as_str()
            .unwrap()
            .contains("bytes")
    );
    task.abort();
}

mod embedded_store {
    #[tokio::test]
    async fn two_relays_one_killed_midway_relay_every_entry_once() {
        let subject = super::embedded();
        super::two_relays_one_killed_midway_relay_every_entry_once(subject.store.clone()).await;
    }

    #[tokio::test]
    async fn a_permanent_failure_is_parked_and_the_rest_go_on() {
        let subject = super::embedded();
        super::a_permanent_failure_is_parked_and_the_rest_go_on(subject.store.clone()).await;
    }

    #[tokio::test]
    async fn entries_reach_each_topic_in_the_order_written() {
        let subject = super::embedded();
        super::entries_reach_each_topic_in_the_order_written(subject.store.clone()).await;
    }
}

mod cosmos_store_on_in_memory_emulator {
    #[tokio::test]
    async fn two_relays_one_killed_midway_relay_every_entry_once() {
        let subject = super::cosmos_emulator().await;
        super::two_relays_one_killed_midway_relay_every_entry_once(subject.store.clone()).await;
    }

    #[tokio::test]
    async fn a_permanent_failure_is_parked_and_the_rest_go_on() {
        let subject = super::cosmos_emulator().await;
        super::a_permanent_failure_is_parked_and_the_rest_go_on(subject.store.clone()).await;
    }

    #[tokio::test]
    async fn entries_reach_each_topic_in_the_order_written() {
        let subject = super::cosmos_emulator().await;
        super::entries_reach_each_topic_in_the_order_written(subject.store.clone()).await;
    }
}

// A service that consumes two topics, each through its own subscription and typed handlers.

struct Shipped;
impl EventType for Shipped {
    const TYPE: &'static str = "tests.parcel.shipped.v1";
    const TOPIC: &'static str = "parcels-events";
    const SOURCE: &'static str = "tests";
    const SUMMARY: &'static str = "A parcel left.";
    type Data = Parcel;
}

struct Paid;
impl EventType for Paid {
    const TYPE: &'static str = "tests.invoice.paid.v1";
    const TOPIC: &'static str = "invoices-events";
    const SOURCE: &'static str = "tests";
    const SUMMARY: &'static str = "An invoice was paid.";
    type Data = Invoice;
}

struct Voided;
impl EventType for Voided {
    const TYPE: &'static str = "tests.invoice.voided.v1";
    const TOPIC: &'static str = "invoices-events";
    const SOURCE: &'static str = "tests";
    const SUMMARY: &'static str = "An invoice was voided (not consumed).";
    type Data = Invoice;
}

#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Parcel {
    parcel: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Invoice {
    invoice: String,
    amount: i64,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

#[async_trait]
impl Handles<Shipped> for Recorder {
    async fn handle(&self, _event: &CloudEvent, data: Parcel) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push(format!("shipped {}", data.parcel));
        Ok(())
    }
}

#[async_trait]
impl Handles<Paid> for Recorder {
    async fn handle(&self, _event: &CloudEvent, data: Invoice) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push(format!("paid {} {}", data.invoice, data.amount));
        Ok(())
    }
}

static TWO_TOPICS: ServiceDescriptor = ServiceDescriptor {
    name: "two-topics",
    default_port: 0,
    containers: &["state"],
    subscriptions: &[
        SubscriptionSpec {
            topic: "parcels-events",
            name: "two-topics",
            types_by_rule: false,
            event_types: &[Shipped::TYPE],
        },
        SubscriptionSpec {
            topic: "invoices-events",
            name: "two-topics",
            types_by_rule: false,
            event_types: &[Paid::TYPE],
        },
    ],
    outboxes: &["state"],
    publishes: Vec::new,
    consumes: || vec![EventContract::of::<Shipped>(), EventContract::of::<Paid>()],
    indexed_fields: &[],
};

#[tokio::test]
async fn a_service_consumes_two_topics_through_typed_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::defaults();
    settings.data_dir = dir.path().to_owned();
    settings.bus.poll_interval_ms = 20;
    let runtime = Runtime::open(&TWO_TOPICS, settings.clone(), None)
        .await
        .unwrap();
    let bus = runtime.bus.clone();
    let recorder = Arc::new(Recorder::default());
    // A dispatcher that does not cover what its subscription declares is refused.
    let wrong = Runtime::open(&TWO_TOPICS, settings, None)
        .await
        .unwrap()
        .serve(
            vec![("two-topics", Dispatcher::new())],
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            || json!({}),
            |_| {},
        );
    assert!(wrong.is_err());
    let handle = runtime
        .serve(
            vec![
                (
                    "two-topics",
                    Dispatcher::new().on::<Shipped, _>(recorder.clone()),
                ),
                (
                    "two-topics",
                    Dispatcher::new().on::<Paid, _>(recorder.clone()),
                ),
            ],
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            || json!({}),
            |_| {},
        )
        .unwrap();
    let publish = |event: CloudEvent, topic: &'static str| {
        let bus = bus.clone();
        async move {
            bus.publish(topic, common::bus::Message::new(event))
                .await
                .unwrap()
        }
    };
    let invoice = |n: &str| Invoice {
        invoice: n.into(),
        amount: 7,
    };
    publish(
        Voided::event("i-0", &invoice("i-0")).unwrap(),
        Voided::TOPIC,
    )
    .await;
    publish(
        Shipped::event(
            "p-1",
            &Parcel {
                parcel: "p-1".into(),
            },
        )
        .unwrap(),
        Shipped::TOPIC,
    )
    .await;
    publish(Paid::event("i-1", &invoice("i-1")).unwrap(), Paid::TOPIC).await;
    let both = eventually(Duration::from_secs(10), || async {
        recorder.0.lock().unwrap().len() == 2
    })
    .await;
    assert!(both, "handled: {:?}", recorder.0.lock().unwrap());
    let mut handled = recorder.0.lock().unwrap().clone();
    handled.sort();
    assert_eq!(handled, ["paid i-1 7", "shipped p-1"]);
    // The voided invoice never reached the subscription: its filter keeps it out.
    assert!(
        bus.dead_letters("invoices-events", "two-topics", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let asyncapi: serde_json::Value = reqwest::get(format!("{}/asyncapi.json", handle.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(asyncapi["asyncapi"], "3.0.0");
    assert!(asyncapi["operations"]["receive.invoices-events.two-topics"].is_object());
    handle.stop(true).await.unwrap();
}

/// Handlers for both of `TWO_TOPICS`' subscriptions, recording what they are given.
fn recording_handlers() -> Vec<(&'static str, Dispatcher)> {
    let recorder = Arc::new(Recorder::default());
    vec![
        (
            "two-topics",
            Dispatcher::new().on::<Shipped, _>(recorder.clone()),
        ),
        ("two-topics", Dispatcher::new().on::<Paid, _>(recorder)),
    ]
}

#[tokio::test]
async fn a_stop_that_hangs_is_bounded_and_names_what_hung() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::defaults();
    settings.data_dir = dir.path().to_owned();
    let mut runtime = Runtime::open(&TWO_TOPICS, settings, None).await.unwrap();
    // Work that never looks at its stop signal.
    runtime.run_beside(
        "the stubborn loop",
        Box::new(|_stop| tokio::spawn(std::future::pending())),
    );
    let handle = runtime
        .serve(
            recording_handlers(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            || json!({}),
            |_| {},
        )
        .unwrap()
        .with_stop_limit(Duration::from_millis(300));
    let url = handle.url();
    let error = handle.stop(true).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(
        error.to_string(),
        "two-topics: the stubborn loop did not stop within 300ms"
    );
    // What did stop stopped: the server no longer answers.
    assert!(reqwest::get(format!("{url}/health/live")).await.is_err());
}

/// `platform up` serves every service from one HTTP server: each keeps its own listener and
/// routes, nothing answers before the server runs, and stopping one stops them all.
#[tokio::test]
async fn services_on_one_shared_server_each_answer_on_their_own_listener() {
    let shared = common::http::SharedHttp::new();
    let dir = tempfile::tempdir().unwrap();
    let mut handles = Vec::new();
    for (n, route) in ["/first", "/second"].into_iter().enumerate() {
        let mut settings = Settings::defaults();
        settings.data_dir = dir.path().join(n.to_string());
        let runtime = Runtime::open(&TWO_TOPICS, settings, None).await.unwrap();
        let launch =
            Launch::on(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).sharing(&shared);
        let handle = runtime
            .serve(
                recording_handlers(),
                launch.listener,
                || json!({}),
                move |config| {
                    config.route(
                        route,
                        actix_web::web::get().to(move || async move { route }),
                    );
                },
            )
            .unwrap();
        handles.push(handle);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    // Bound, not yet served.
    assert!(
        client
            .get(format!("{}/first", handles[0].url()))
            .send()
            .await
            .is_err()
    );
    shared.run(1).unwrap();
    for (handle, route, other) in [
        (&handles[0], "/first", "/second"),
        (&handles[1], "/second", "/first"),
    ] {
        let answer = reqwest::get(format!("{}{route}", handle.url()))
            .await
            .unwrap();
        assert_eq!(answer.text().await.unwrap(), route);
        let elsewhere = reqwest::get(format!("{}{other}", handle.url()))
            .await
            .unwrap();
        assert_eq!(elsewhere.status(), 404, "{route}'s listener serves {other}");
    }
    let urls: Vec<String> = handles.iter().map(|h| h.url()).collect();
    let mut handles = handles.into_iter();
    handles.next().unwrap().stop(true).await.unwrap();
    for url in &urls {
        assert!(reqwest::get(format!("{url}/health/live")).await.is_err());
    }
    // The other finds the server stopped, and stops its own work.
    handles.next().unwrap().stop(true).await.unwrap();
}

#[tokio::test]
async fn a_handler_given_a_malformed_event_dead_letters_it() {
    let dispatcher = Dispatcher::new().on::<Paid, _>(Arc::new(Recorder::default()));
    let bad = CloudEvent::new("tests", Paid::TYPE, "i-9", json!({"invoice": 5}));
    match dispatcher.dispatch(&bad).await {
        Err(HandlerError::Permanent(reason)) => assert!(reason.contains("malformed"), "{reason}"),
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

/// Counts what a store is asked, by kind of operation.
struct CountingStore {
    inner: SharedStore,
    changes: std::sync::atomic::AtomicUsize,
    writes: std::sync::atomic::AtomicUsize,
    other: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl common::store::DocumentStore for CountingStore {
    async fn read(
        &self,
        c: &str,
        pk: &str,
        id: &str,
    ) -> Result<Option<common::store::Document>, common::store::StoreError> {
        self.other.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.read(c, pk, id).await
    }
    async fn find_by_id(
        &self,
        c: &str,
        id: &str,
    ) -> Result<Option<common::store::Document>, common::store::StoreError> {
        self.other.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.find_by_id(c, id).await
    }
    async fn create(
        &self,
        c: &str,
        pk: &str,
        id: &str,
        body: serde_json::Value,
    ) -> Result<common::store::Document, common::store::StoreError> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.create(c, pk, id, body).await
    }
    async fn replace(
        &self,
        c: &str,
        pk: &str,
        id: &str,
        body: serde_json::Value,
        etag: Option<&common::store::ETag>,
    ) -> Result<common::store::Document, common::store::StoreError> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.replace(c, pk, id, body, etag).await
    }
    async fn upsert(
        &self,
        c: &str,
        pk: &str,
        id: &str,
        body: serde_json::Value,
    ) -> Result<common::store::Document, common::store::StoreError> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.upsert(c, pk, id, body).await
    }
    async fn delete(
        &self,
        c: &str,
        pk: &str,
        id: &str,
        etag: Option<&common::store::ETag>,
    ) -> Result<(), common::store::StoreError> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.delete(c, pk, id, etag).await
    }
    async fn query(
        &self,
        c: &str,
        query: &Query,
    ) -> Result<common::store::Page, common::store::StoreError> {
        self.other.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.query(c, query).await
    }
    async fn changes(
        &self,
        c: &str,
        since: Option<&common::store::Checkpoint>,
        max: usize,
    ) -> Result<common::store::ChangeBatch, common::store::StoreError> {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.changes(c, since, max).await
    }
    async fn batch(
        &self,
        c: &str,
        pk: &str,
        ops: Vec<common::store::BatchOp>,
    ) -> Result<Vec<Option<common::store::ETag>>, common::store::StoreError> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.batch(c, pk, ops).await
    }
    async fn ping(&self) -> Result<(), common::store::StoreError> {
        self.inner.ping().await
    }
}

/// An idle reader asks the store one change-feed read per poll and renews its lease when
/// half of it has passed; nothing else. (docs/operations.md turns this into requests per
/// minute for the default settings.)
#[tokio::test]
async fn an_idle_reader_reads_the_feed_once_per_poll_and_renews_its_lease() {
    use std::sync::atomic::Ordering::SeqCst;
    let subject = embedded();
    let counting = Arc::new(CountingStore {
        inner: subject.store.clone(),
        changes: Default::default(),
        writes: Default::default(),
        other: Default::default(),
    });
    let store: SharedStore = counting.clone();
    let (bus, _dir) = bus();
    let mut reader = relay(&store, &bus, "idle");
    reader.settings.poll_interval_ms = 25;
    reader.settings.lease_seconds = 2;
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let started = std::time::Instant::now();
    let task = reader.spawn(stopped);
    // Wait for enough polls to see the pattern, not for a time.
    assert!(
        eventually(Duration::from_secs(30), || async {
            counting.changes.load(SeqCst) >= 80
        })
        .await
    );
    task.abort();
    let elapsed = started.elapsed();
    let (changes, writes, other) = (
        counting.changes.load(SeqCst),
        counting.writes.load(SeqCst),
        counting.other.load(SeqCst),
    );
    // One read of the lease at the start; one create; then renewals only.
    assert_eq!(other, 1, "reads and queries besides the feed");
    let renewals_allowed = 2 + (elapsed.as_secs_f64() / 1.0).ceil() as usize;
    assert!(
        writes <= renewals_allowed,
        "{writes} lease writes in {elapsed:?}"
    );
    println!(
        "idle reader: {changes} feed reads, {writes} lease writes, {other} other in {elapsed:?}"
    );
}
