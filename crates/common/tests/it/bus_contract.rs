//! The event bus contract, run against every adapter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::bus::embedded::EmbeddedBus;
use common::bus::worker::{HandlerError, MessageHandler, WorkerSettings, spawn_worker};
use common::bus::{
    BusError, CloudEvent, EventBus, Message, SharedBus, SubscriptionCounts, SubscriptionOptions,
};
use serde_json::json;

const TOPIC: &str = "things-events";

struct Subject {
    bus: SharedBus,
    _dir: tempfile::TempDir,
}

fn embedded() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let bus =
        EmbeddedBus::open_with_window(&dir.path().join("bus.db"), Duration::from_secs(60)).unwrap();
    Subject {
        bus: Arc::new(bus),
        _dir: dir,
    }
}

/// The Service Bus adapter on an in-process broker: the broker (to inspect and fault) and
/// the adapter (for what only it has).
fn fake_servicebus() -> (
    Arc<common::testing::fake_servicebus::FakeServiceBus>,
    Arc<common::bus::servicebus::ServiceBusBus>,
) {
    fake_servicebus_from(common::testing::fake_servicebus::FakeServiceBus::new())
}

fn fake_servicebus_from(
    broker: common::testing::fake_servicebus::FakeServiceBus,
) -> (
    Arc<common::testing::fake_servicebus::FakeServiceBus>,
    Arc<common::bus::servicebus::ServiceBusBus>,
) {
    let broker = Arc::new(broker);
    let bus = Arc::new(common::bus::servicebus::ServiceBusBus::new(
        broker.clone(),
        &broker.namespace,
        &broker.policy,
        broker.key.clone().into(),
    ));
    (broker, bus)
}

fn servicebus() -> Subject {
    Subject {
        bus: fake_servicebus().1,
        _dir: tempfile::tempdir().unwrap(),
    }
}

/// A real namespace from `SERVICEBUS_CONNECTION_STRING`
/// (`Endpoint=sb://<ns>.servicebus.windows.net/;SharedAccessKeyName=..;SharedAccessKey=..`);
/// the policy needs Manage rights (entities are created per test run).
/// A live namespace: the bus, and the adapter itself to remove what a test created.
struct LiveSubject {
    bus: SharedBus,
    admin: Arc<common::bus::servicebus::ServiceBusBus>,
}

fn servicebus_live() -> Option<LiveSubject> {
    use common::bus::servicebus::{ReqwestTransport, ServiceBusBus};
    let connection = std::env::var("SERVICEBUS_CONNECTION_STRING").ok()?;
    let part = |name: &str| {
        connection
            .split(';')
            .find_map(|field| field.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    let endpoint = part("Endpoint")?;
    let namespace = endpoint
        .trim_start_matches("sb://")
        .split('.')
        .next()?
        .to_owned();
    let transport = ReqwestTransport::new(Duration::from_secs(30)).ok()?;
    let bus = Arc::new(ServiceBusBus::new(
        Arc::new(transport),
        &namespace,
        &part("SharedAccessKeyName")?,
        part("SharedAccessKey")?.into(),
    ));
    Some(LiveSubject {
        bus: bus.clone(),
        admin: bus,
    })
}

fn event(n: i64) -> Message {
    Message::new(CloudEvent::new(
        "tests",
        "tests.thing.happened.v1",
        format!("thing-{n}"),
        json!({"n": n}),
    ))
}

/// A message larger than any bus takes.
fn over_the_size_limit() -> Message {
    Message::new(CloudEvent::new(
        "tests",
        "tests.thing.happened.v1",
        "huge",
        json!({"blob": "x".repeat(common::bus::MAX_MESSAGE_BYTES)}),
    ))
}

fn options(max_delivery_count: u32, lock: Duration) -> SubscriptionOptions {
    SubscriptionOptions {
        max_delivery_count,
        lock_duration: lock,
        event_types: Vec::new(),
        types_by_rule: false,
    }
}

fn typed(event_type: &str, n: i64) -> Message {
    Message::new(CloudEvent::new(
        "tests",
        event_type,
        format!("thing-{n}"),
        json!({"n": n}),
    ))
}

macro_rules! contract {
    ($($name:ident),+ $(,)?) => {
        mod embedded_adapter {
            $(#[tokio::test] async fn $name() { super::$name(&super::embedded().bus, super::TOPIC).await; })+
        }
        mod servicebus_adapter_on_in_process_broker {
            $(#[tokio::test] async fn $name() { super::$name(&super::servicebus().bus, super::TOPIC).await; })+
        }
        // Run with `cargo test -p common --test it servicebus_adapter_live -- --ignored` and
        // SERVICEBUS_CONNECTION_STRING set.
        mod servicebus_adapter_live {
            $(#[tokio::test] #[ignore = "needs SERVICEBUS_CONNECTION_STRING"]
            async fn $name() {
                let subject = super::servicebus_live().expect("SERVICEBUS_CONNECTION_STRING is not set or malformed");
                // A topic of its own per test and run, removed afterwards.
                let topic = format!("contract-{}", uuid::Uuid::new_v4().simple());
                super::$name(&subject.bus, &topic).await;
                subject.admin.delete_topic(&topic).await.expect("removing the test's topic");
            })+
        }
    };
}

contract!(
    publish_many_publishes_each_and_refuses_each_on_its_own,
    complete_many_completes_each_and_reports_a_lost_lock_on_its_own,
    every_subscription_gets_a_copy,
    completed_messages_are_gone,
    duplicate_ids_are_dropped,
    abandoned_messages_come_back_after_the_delay,
    expired_locks_return_the_message,
    max_delivery_count_dead_letters_and_replay_resubmits,
    explicit_dead_letter_keeps_reason,
    scheduled_messages_wait,
    receive_on_unknown_subscription_fails,
    properties_and_trace_context_travel,
    competing_receivers_never_share_a_message,
    a_subscription_takes_only_its_event_types,
    type_rules_let_in_what_is_asked_for_and_replays_still_arrive,
    a_message_over_the_size_limit_is_rejected,
    replay_reaches_only_the_subscription_it_came_from,
    listing_dead_letters_does_not_consume_them,
    a_discarded_dead_letter_is_gone_for_good,
    the_counts_say_what_waits_and_what_is_dead_lettered,
);

async fn the_counts_say_what_waits_and_what_is_dead_lettered(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    let counts = |waiting, dead_lettered| SubscriptionCounts {
        waiting,
        dead_lettered,
    };
    assert_eq!(bus.counts(topic, "s").await.unwrap(), counts(0, 0));
    for n in 1..=4 {
        bus.publish(topic, event(n)).await.unwrap();
    }
    assert_eq!(bus.counts(topic, "s").await.unwrap(), counts(4, 0));
    // Locked still waits; completed does not; dead-lettered moves to the other count.
    let locked = bus.receive(topic, "s", 1).await.unwrap().remove(0);
    assert_eq!(bus.counts(topic, "s").await.unwrap(), counts(4, 0));
    bus.complete(topic, "s", &locked.lock).await.unwrap();
    dead_letter_one(bus, topic, "s").await;
    assert_eq!(bus.counts(topic, "s").await.unwrap(), counts(2, 1));
    dead_letter_one(bus, topic, "s").await;
    assert_eq!(bus.counts(topic, "s").await.unwrap(), counts(1, 2));
    // Looking at the letters neither takes them nor hides them from the count.
    assert_eq!(bus.dead_letters(topic, "s", 10).await.unwrap().len(), 2);
    assert_eq!(bus.counts(topic, "s").await.unwrap(), counts(1, 2));
    assert!(bus.counts(topic, "nobody").await.is_err());
}

async fn a_discarded_dead_letter_is_gone_for_good(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.publish(topic, event(1)).await.unwrap();
    bus.publish(topic, event(2)).await.unwrap();
    let first = dead_letter_one(bus, topic, "s").await;
    let second = dead_letter_one(bus, topic, "s").await;
    assert!(bus.discard(topic, "s", &first).await.unwrap());
    assert!(!bus.discard(topic, "s", &first).await.unwrap());
    assert!(!bus.replay(topic, "s", &first).await.unwrap());
    let left: Vec<String> = bus
        .dead_letters(topic, "s", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.message.event.id)
        .collect();
    assert_eq!(left, [second]);
    assert!(bus.receive(topic, "s", 1).await.unwrap().is_empty());
}

async fn dead_letter_one(bus: &SharedBus, topic: &str, subscription: &str) -> String {
    let delivery = bus.receive(topic, subscription, 1).await.unwrap().remove(0);
    bus.dead_letter(topic, subscription, &delivery.lock, "Poison", "test")
        .await
        .unwrap();
    delivery.message.event.id.clone()
}

async fn replay_reaches_only_the_subscription_it_came_from(bus: &SharedBus, topic: &str) {
    for subscription in ["a", "b"] {
        bus.ensure_subscription(topic, subscription, options(10, Duration::from_secs(30)))
            .await
            .unwrap();
    }
    bus.publish(topic, event(1)).await.unwrap();
    // b handles it; a dead-letters it.
    let taken = bus.receive(topic, "b", 1).await.unwrap().remove(0);
    bus.complete(topic, "b", &taken.lock).await.unwrap();
    let id = dead_letter_one(bus, topic, "a").await;
    assert!(bus.replay(topic, "a", &id).await.unwrap());
    let again = bus.receive(topic, "a", 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message.event.id, id);
    assert!(
        bus.receive(topic, "b", 10).await.unwrap().is_empty(),
        "the replay reached a subscription that had handled the message"
    );
}

async fn listing_dead_letters_does_not_consume_them(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "a", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.publish(topic, event(1)).await.unwrap();
    let id = dead_letter_one(bus, topic, "a").await;
    for _ in 0..15 {
        let letters = bus.dead_letters(topic, "a", 10).await.unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].message.event.id, id);
    }
    assert!(bus.replay(topic, "a", &id).await.unwrap());
}

async fn a_subscription_takes_only_its_event_types(bus: &SharedBus, topic: &str) {
    let wanted = ["tests.thing.made.v1", "tests.thing.sold.v1"];
    bus.ensure_subscription(
        topic,
        "picky",
        options(10, Duration::from_secs(30)).for_event_types(&wanted),
    )
    .await
    .unwrap();
    bus.ensure_subscription(topic, "all", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.publish(topic, typed("tests.thing.made.v1", 1))
        .await
        .unwrap();
    bus.publish(topic, typed("tests.thing.lost.v1", 2))
        .await
        .unwrap();
    bus.publish(topic, typed("tests.thing.sold.v1", 3))
        .await
        .unwrap();
    let mut picky = Vec::new();
    for delivery in bus.receive(topic, "picky", 10).await.unwrap() {
        picky.push(delivery.message.event.event_type.clone());
        bus.complete(topic, "picky", &delivery.lock).await.unwrap();
    }
    picky.sort();
    assert_eq!(picky, wanted);
    assert_eq!(bus.receive(topic, "all", 10).await.unwrap().len(), 3);

    // Filters can change: the same subscription now takes one type only, and everything
    // again when given none.
    bus.ensure_subscription(
        topic,
        "picky",
        options(10, Duration::from_secs(30)).for_event_types(&["tests.thing.lost.v1"]),
    )
    .await
    .unwrap();
    bus.publish(topic, typed("tests.thing.made.v1", 4))
        .await
        .unwrap();
    bus.publish(topic, typed("tests.thing.lost.v1", 5))
        .await
        .unwrap();
    let taken = bus.receive(topic, "picky", 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].message.event.event_type, "tests.thing.lost.v1");
    bus.complete(topic, "picky", &taken[0].lock).await.unwrap();
    bus.ensure_subscription(topic, "picky", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.publish(topic, typed("tests.thing.made.v1", 6))
        .await
        .unwrap();
    assert_eq!(bus.receive(topic, "picky", 10).await.unwrap().len(), 1);
}

async fn type_rules_let_in_what_is_asked_for_and_replays_still_arrive(
    bus: &SharedBus,
    topic: &str,
) {
    let asks = options(1, Duration::from_secs(30)).with_type_rules();
    bus.ensure_subscription(topic, "asks", asks.clone())
        .await
        .unwrap();
    bus.ensure_subscription(topic, "all", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    let received = |subscription: &'static str| async move {
        let mut types = Vec::new();
        for delivery in bus.receive(topic, subscription, 10).await.unwrap() {
            types.push(delivery.message.event.event_type.clone());
            bus.complete(topic, subscription, &delivery.lock)
                .await
                .unwrap();
        }
        types.sort();
        types
    };
    // No rule yet: nothing is let in.
    bus.publish(topic, typed("tests.thing.made.v1", 1))
        .await
        .unwrap();
    assert!(received("asks").await.is_empty());
    assert!(bus.type_rules(topic, "asks").await.unwrap().is_empty());

    let made = vec!["tests.thing.made.v1".to_owned()];
    let sold = vec![
        "tests.thing.sold.v1".to_owned(),
        "tests.thing.made.v1".to_owned(),
    ];
    bus.add_type_rule(topic, "asks", "wants-made", &made)
        .await
        .unwrap();
    bus.add_type_rule(topic, "asks", "wants-sold", &sold)
        .await
        .unwrap();
    // A rule never changes: adding one of the same name again keeps the first.
    bus.add_type_rule(
        topic,
        "asks",
        "wants-made",
        &["tests.thing.lost.v1".to_owned()],
    )
    .await
    .unwrap();
    // The subscription's own filter stays as it is when it is ensured again at start.
    bus.ensure_subscription(topic, "asks", asks).await.unwrap();
    assert_eq!(
        bus.type_rules(topic, "asks").await.unwrap(),
        vec!["wants-made".to_owned(), "wants-sold".to_owned()]
    );
    for (n, event_type) in ["made", "sold", "lost"].into_iter().enumerate() {
        bus.publish(
            topic,
            typed(&format!("tests.thing.{event_type}.v1"), 10 + n as i64),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        received("asks").await,
        vec!["tests.thing.made.v1", "tests.thing.sold.v1"],
        "each type once, however many rules name it"
    );

    bus.remove_type_rule(topic, "asks", "wants-sold")
        .await
        .unwrap();
    bus.remove_type_rule(topic, "asks", "wants-sold")
        .await
        .unwrap();
    assert_eq!(
        bus.type_rules(topic, "asks").await.unwrap(),
        vec!["wants-made".to_owned()]
    );
    bus.publish(topic, typed("tests.thing.sold.v1", 20))
        .await
        .unwrap();
    bus.publish(topic, typed("tests.thing.made.v1", 21))
        .await
        .unwrap();
    assert_eq!(received("asks").await, vec!["tests.thing.made.v1"]);

    // A dead letter replayed to the subscription arrives whatever its rules.
    bus.remove_type_rule(topic, "asks", "wants-made")
        .await
        .unwrap();
    assert_eq!(received("all").await.len(), 6);
    bus.add_type_rule(topic, "asks", "wants-made", &made)
        .await
        .unwrap();
    bus.publish(topic, typed("tests.thing.made.v1", 30))
        .await
        .unwrap();
    let id = dead_letter_one(bus, topic, "asks").await;
    bus.remove_type_rule(topic, "asks", "wants-made")
        .await
        .unwrap();
    assert!(bus.replay(topic, "asks", &id).await.unwrap());
    assert_eq!(received("asks").await, vec!["tests.thing.made.v1"]);
    assert!(
        received("all").await.len() == 1,
        "a replay reaches only its subscription"
    );

    assert!(matches!(
        bus.add_type_rule(topic, "asks", "not a name", &made).await,
        Err(BusError::Rejected(_))
    ));
    assert!(matches!(
        bus.type_rules(topic, "nobody").await,
        Err(BusError::UnknownSubscription { .. })
    ));
}

async fn a_message_over_the_size_limit_is_rejected(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "a", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    let huge = over_the_size_limit();
    match bus.publish(topic, huge).await {
        Err(BusError::Rejected(_)) => {}
        other => panic!("expected a rejection, got {other:?}"),
    }
    bus.publish(topic, event(1)).await.unwrap();
    assert_eq!(bus.receive(topic, "a", 10).await.unwrap().len(), 1);
}

async fn publish_many_publishes_each_and_refuses_each_on_its_own(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "a", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    let huge = over_the_size_limit();
    // The repeat of event 1 is dropped as a duplicate, within the call as across calls.
    let (one, two) = (event(1), event(2));
    let outcomes = bus
        .publish_many(topic, vec![one.clone(), huge, two.clone(), one])
        .await
        .unwrap();
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok() && outcomes[3].is_ok());
    assert!(matches!(outcomes[1], Err(BusError::Rejected(_))));
    bus.publish_many(topic, vec![two]).await.unwrap();
    assert!(bus.publish_many(topic, vec![]).await.unwrap().is_empty());
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 && Instant::now() < until {
        for delivery in bus.receive(topic, "a", 10).await.unwrap() {
            seen.push(delivery.message.event.subject.clone().unwrap_or_default());
            bus.complete(topic, "a", &delivery.lock).await.unwrap();
        }
    }
    seen.sort();
    assert_eq!(seen, ["thing-1", "thing-2"]);
    assert!(bus.receive(topic, "a", 10).await.unwrap().is_empty());
}

async fn complete_many_completes_each_and_reports_a_lost_lock_on_its_own(
    bus: &SharedBus,
    topic: &str,
) {
    bus.ensure_subscription(topic, "a", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.publish_many(topic, vec![event(1), event(2), event(3)])
        .await
        .unwrap();
    let mut held = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while held.len() < 3 && Instant::now() < until {
        held.extend(bus.receive(topic, "a", 10).await.unwrap());
    }
    assert_eq!(held.len(), 3);
    // The second one's lock is gone (completed already): only it says so.
    bus.complete(topic, "a", &held[1].lock).await.unwrap();
    let locks: Vec<_> = held.iter().map(|d| d.lock.clone()).collect();
    let outcomes = bus.complete_many(topic, "a", &locks).await.unwrap();
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    assert!(
        matches!(outcomes[1], Err(BusError::LockLost)),
        "{outcomes:?}"
    );
    assert!(bus.complete_many(topic, "a", &[]).await.unwrap().is_empty());
    assert!(bus.receive(topic, "a", 10).await.unwrap().is_empty());
}

async fn every_subscription_gets_a_copy(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "a", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.ensure_subscription(topic, "b", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.publish(topic, event(1)).await.unwrap();
    let a = bus.receive(topic, "a", 10).await.unwrap();
    let b = bus.receive(topic, "b", 10).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    assert_eq!(a[0].message.event.data, json!({"n": 1}));
    assert_eq!(a[0].delivery_count, 1);
    // Locked: not delivered twice while the lock holds.
    assert!(bus.receive(topic, "a", 10).await.unwrap().is_empty());
}

async fn completed_messages_are_gone(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.publish(topic, event(1)).await.unwrap();
    let delivery = bus.receive(topic, "s", 1).await.unwrap().remove(0);
    bus.complete(topic, "s", &delivery.lock).await.unwrap();
    assert_eq!(
        bus.complete(topic, "s", &delivery.lock).await.unwrap_err(),
        BusError::LockLost
    );
    assert!(bus.receive(topic, "s", 10).await.unwrap().is_empty());
}

async fn duplicate_ids_are_dropped(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    let message = event(1);
    bus.publish(topic, message.clone()).await.unwrap();
    bus.publish(topic, message.clone()).await.unwrap();
    let first = bus.receive(topic, "s", 10).await.unwrap();
    assert_eq!(first.len(), 1);
    bus.complete(topic, "s", &first[0].lock).await.unwrap();
    // Still inside the window after completion: dropped again.
    bus.publish(topic, message).await.unwrap();
    assert!(bus.receive(topic, "s", 10).await.unwrap().is_empty());
}

async fn receive_until(
    bus: &SharedBus,
    topic: &str,
    subscription: &str,
    deadline: Duration,
) -> Vec<common::bus::Delivery> {
    let until = Instant::now() + deadline;
    loop {
        let got = bus.receive(topic, subscription, 10).await.unwrap();
        if !got.is_empty() || Instant::now() > until {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn abandoned_messages_come_back_after_the_delay(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.publish(topic, event(1)).await.unwrap();
    let first = bus.receive(topic, "s", 1).await.unwrap().remove(0);
    let abandoned_at = Instant::now();
    bus.abandon(topic, "s", &first.lock, Duration::from_millis(1000))
        .await
        .unwrap();
    assert!(
        bus.receive(topic, "s", 1).await.unwrap().is_empty(),
        "redelivered before the delay"
    );
    let again = receive_until(bus, topic, "s", Duration::from_secs(10)).await;
    assert!(abandoned_at.elapsed() >= Duration::from_millis(1000));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_count, 2);
    assert_eq!(again[0].message.id(), first.message.id());
}

async fn expired_locks_return_the_message(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(10, Duration::from_millis(200)))
        .await
        .unwrap();
    bus.publish(topic, event(1)).await.unwrap();
    let first = bus.receive(topic, "s", 1).await.unwrap().remove(0);
    let again = receive_until(bus, topic, "s", Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_count, 2);
    assert_eq!(
        bus.complete(topic, "s", &first.lock).await.unwrap_err(),
        BusError::LockLost
    );
    bus.complete(topic, "s", &again[0].lock).await.unwrap();
}

async fn max_delivery_count_dead_letters_and_replay_resubmits(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(3, Duration::from_secs(30)))
        .await
        .unwrap();
    let message = event(7);
    bus.publish(topic, message.clone()).await.unwrap();
    for attempt in 1..=3 {
        let delivery = bus.receive(topic, "s", 1).await.unwrap().remove(0);
        assert_eq!(delivery.delivery_count, attempt);
        bus.abandon(topic, "s", &delivery.lock, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(bus.receive(topic, "s", 1).await.unwrap().is_empty());
    let dead = bus.dead_letters(topic, "s", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "MaxDeliveryCountExceeded");
    assert_eq!(dead[0].delivery_count, 3);
    assert_eq!(dead[0].message.event, message.event);
    let counted = bus.counts(topic, "s").await.unwrap();
    assert_eq!((counted.waiting, counted.dead_lettered), (0, 1));

    assert!(bus.replay(topic, "s", message.id()).await.unwrap());
    assert!(!bus.replay(topic, "s", message.id()).await.unwrap());
    assert!(bus.dead_letters(topic, "s", 10).await.unwrap().is_empty());
    let replayed = bus.receive(topic, "s", 1).await.unwrap().remove(0);
    assert_eq!(replayed.delivery_count, 1);
    bus.complete(topic, "s", &replayed.lock).await.unwrap();
}

async fn explicit_dead_letter_keeps_reason(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.publish(topic, event(1)).await.unwrap();
    let delivery = bus.receive(topic, "s", 1).await.unwrap().remove(0);
    bus.dead_letter(topic, "s", &delivery.lock, "Malformed", "no lines")
        .await
        .unwrap();
    let dead = bus.dead_letters(topic, "s", 10).await.unwrap();
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].description.as_str()),
        ("Malformed", "no lines")
    );
}

async fn scheduled_messages_wait(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1000);
    bus.publish(topic, event(1).scheduled(at)).await.unwrap();
    assert!(bus.receive(topic, "s", 1).await.unwrap().is_empty());
    let delivered = receive_until(bus, topic, "s", Duration::from_secs(10)).await;
    assert_eq!(delivered.len(), 1);
    assert!(time::OffsetDateTime::now_utc() >= at);
}

async fn receive_on_unknown_subscription_fails(bus: &SharedBus, topic: &str) {
    assert!(matches!(
        bus.receive(topic, "nobody", 1).await.unwrap_err(),
        BusError::UnknownSubscription { .. }
    ));
}

async fn properties_and_trace_context_travel(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    let mut message = event(1).with_correlation_id("order-1");
    message.properties.insert(
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    );
    bus.publish(topic, message.clone()).await.unwrap();
    let got = bus.receive(topic, "s", 1).await.unwrap().remove(0).message;
    assert_eq!(got.correlation_id.as_deref(), Some("order-1"));
    assert_eq!(got.properties, message.properties);
    assert_eq!(got.event.subject.as_deref(), Some("thing-1"));
    assert_eq!(got.event.specversion, "1.0");
}

async fn competing_receivers_never_share_a_message(bus: &SharedBus, topic: &str) {
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    for n in 0..50 {
        bus.publish(topic, event(n)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let bus = bus.clone();
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            let topic = topic.as_str();
            let mut ids = Vec::new();
            loop {
                let got = bus.receive(topic, "s", 3).await.unwrap();
                if got.is_empty() {
                    return ids;
                }
                for delivery in got {
                    ids.push(delivery.message.id().to_owned());
                    bus.complete(topic, "s", &delivery.lock).await.unwrap();
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!((count, all.len()), (50, 50));
}

/// A handler that fails until told otherwise.
struct Flaky {
    calls: AtomicU32,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl MessageHandler for Flaky {
    async fn handle(&self, _: &Message) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            Err(HandlerError::Transient("always failing".into()))
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn a_message_that_always_fails_is_dead_lettered_after_max_deliveries_then_replayed() {
    let topic = TOPIC;
    let subject = embedded();
    let bus = subject.bus.clone();
    bus.ensure_subscription(topic, "w", options(4, Duration::from_secs(30)))
        .await
        .unwrap();
    let handler = Arc::new(Flaky {
        calls: AtomicU32::new(0),
        fail: true.into(),
    });
    let mut settings = WorkerSettings::new(topic, "w");
    settings.retry_backoff = vec![Duration::from_millis(10)];
    settings.poll_interval = Duration::from_millis(20);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = spawn_worker(bus.clone(), settings, handler.clone(), stopped);
    let message = event(1);
    bus.publish(topic, message.clone()).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.dead_letters(topic, "w", 10).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handler.calls.load(Ordering::SeqCst), 4);

    handler.fail.store(false, Ordering::SeqCst);
    assert!(bus.replay(topic, "w", message.id()).await.unwrap());
    while handler.calls.load(Ordering::SeqCst) < 5 {
        assert!(Instant::now() < deadline, "replay not delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    worker.await.unwrap();
    assert!(bus.receive(topic, "w", 10).await.unwrap().is_empty());
    assert!(bus.dead_letters(topic, "w", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn service_bus_requests_carry_valid_sas_signatures() {
    let topic = TOPIC;
    use common::bus::servicebus::ServiceBusBus;
    let broker = Arc::new(common::testing::fake_servicebus::FakeServiceBus::new());
    let good = ServiceBusBus::new(
        broker.clone(),
        &broker.namespace,
        &broker.policy,
        broker.key.clone().into(),
    );
    good.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    good.publish(topic, event(1)).await.unwrap();
    assert_eq!(broker.refused.load(Ordering::SeqCst), 0);

    let forged = ServiceBusBus::new(
        broker.clone(),
        &broker.namespace,
        &broker.policy,
        "not-the-key".to_owned().into(),
    );
    assert!(matches!(
        forged.publish(topic, event(2)).await.unwrap_err(),
        BusError::Unavailable(_)
    ));
    assert!(matches!(
        forged.receive(topic, "s", 1).await.unwrap_err(),
        BusError::Unavailable(_)
    ));
    assert!(broker.refused.load(Ordering::SeqCst) >= 2);
    // Only the genuine message arrived.
    assert_eq!(good.receive(topic, "s", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn entra_transport_sends_a_bearer_token_instead_of_the_signature() {
    use azure_core_legacy::{HttpClient, Method, Request, Response, StatusCode};
    use common::bus::servicebus::EntraTransport;

    #[derive(Debug)]
    struct FixedToken;
    #[async_trait]
    impl azure_core::credentials::TokenCredential for FixedToken {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            assert_eq!(scopes, [EntraTransport::SCOPE]);
            Ok(azure_core::credentials::AccessToken::new(
                "entra-token",
                time::OffsetDateTime::now_utc() + time::Duration::HOUR,
            ))
        }
    }

    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<String>>);
    #[async_trait]
    impl HttpClient for Recorder {
        async fn execute_request(&self, request: &Request) -> azure_core_legacy::Result<Response> {
            let auth = request
                .headers()
                .iter()
                .find(|(n, _)| n.as_str() == "authorization")
                .map(|(_, v)| v.as_str().to_owned());
            self.0.lock().unwrap().push(auth.unwrap_or_default());
            Ok(Response::new(
                StatusCode::Ok,
                Default::default(),
                Box::pin(futures::stream::once(async { Ok(bytes::Bytes::new()) })),
            ))
        }
    }

    let recorder = Arc::new(Recorder::default());
    let transport = EntraTransport::new(recorder.clone(), Arc::new(FixedToken));
    let mut request = Request::new(
        url::Url::parse("https://ns.servicebus.windows.net/t/messages").unwrap(),
        Method::Post,
    );
    request.insert_header(
        "authorization",
        "SharedAccessSignature sr=x&sig=y&se=1&skn=z",
    );
    transport.execute_request(&request).await.unwrap();
    assert_eq!(
        recorder.0.lock().unwrap().as_slice(),
        ["Bearer entra-token"]
    );
}

/// Partitioned entities number messages past 2^32: receiving and settling must not care.
#[tokio::test]
async fn servicebus_adapter_reads_64_bit_sequence_numbers() {
    use common::bus::servicebus::ServiceBusBus;
    let broker = Arc::new(
        common::testing::fake_servicebus::FakeServiceBus::new().with_sequence_from((1 << 48) + 1),
    );
    let topic = TOPIC;
    let bus: SharedBus = Arc::new(ServiceBusBus::new(
        broker.clone(),
        &broker.namespace,
        &broker.policy,
        broker.key.clone().into(),
    ));
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.publish(topic, event(1)).await.unwrap();
    bus.publish(topic, event(2)).await.unwrap();
    let deliveries = bus.receive(topic, "s", 10).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    assert_ne!(deliveries[0].lock, deliveries[1].lock);
    for delivery in deliveries {
        bus.complete(topic, "s", &delivery.lock).await.unwrap();
    }
    assert!(bus.receive(topic, "s", 10).await.unwrap().is_empty());
}

/// An idle subscription is asked with the REST long poll, not in a tight loop.
#[tokio::test]
async fn servicebus_adapter_long_polls_an_empty_subscription() {
    use std::sync::atomic::Ordering;
    let (broker, bus) =
        fake_servicebus_from(common::testing::fake_servicebus::FakeServiceBus::new());
    let bus: SharedBus = bus;
    let topic = TOPIC;
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(bus.receive(topic, "s", 16).await.unwrap().is_empty());
    assert_eq!(broker.long_polls.load(Ordering::SeqCst), 1);
    assert_eq!(broker.short_polls.load(Ordering::SeqCst), 0);
    // With messages there, the first wait returns one and the rest are taken at once.
    for n in 0..3 {
        bus.publish(topic, event(n)).await.unwrap();
    }
    assert_eq!(bus.receive(topic, "s", 16).await.unwrap().len(), 3);
    assert_eq!(broker.long_polls.load(Ordering::SeqCst), 2);
}

/// A throttled or busy namespace is retried, waiting what it asks.
#[tokio::test]
async fn servicebus_adapter_retries_throttling_and_busy_answers() {
    use azure_core_legacy::StatusCode;
    use std::sync::atomic::Ordering;
    let (broker, bus) =
        fake_servicebus_from(common::testing::fake_servicebus::FakeServiceBus::new());
    let bus: SharedBus = bus;
    let topic = TOPIC;
    bus.ensure_subscription(topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    broker.inject_faults(1, StatusCode::TooManyRequests, Some(1));
    broker.inject_faults(1, StatusCode::ServiceUnavailable, None);
    let started = Instant::now();
    bus.publish(topic, event(1)).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    assert_eq!(broker.faulted.load(Ordering::SeqCst), 2);
    broker.inject_faults(1, StatusCode::ServiceUnavailable, None);
    let deliveries = bus.receive(topic, "s", 10).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    broker.inject_faults(1, StatusCode::TooManyRequests, Some(0));
    bus.complete(topic, "s", &deliveries[0].lock).await.unwrap();
    // A namespace that stays busy is a clear failure, not a hang.
    broker.inject_faults(10, StatusCode::ServiceUnavailable, Some(0));
    let error = bus.publish(topic, event(2)).await.unwrap_err();
    assert!(matches!(error, BusError::Unavailable(_)), "{error:?}");
}

/// Live suites remove what they created: the topic, its subscriptions, their parked letters.
#[tokio::test]
async fn servicebus_adapter_removes_a_topic_and_its_parked_letters() {
    use common::bus::servicebus::dead_letter_queue;
    let (broker, admin) = fake_servicebus();
    let bus: SharedBus = admin.clone();
    let topic = format!("contract-{}", uuid::Uuid::new_v4().simple());
    bus.ensure_subscription(&topic, "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    admin.delete_topic(&topic).await.unwrap();
    assert!(matches!(
        bus.receive(&topic, "s", 1).await,
        Err(BusError::UnknownSubscription { .. })
    ));
    assert!(broker.has_no_entity(&dead_letter_queue(&topic, "s")));
}

/// A topic made elsewhere without duplicate detection cannot gain it: the start says so.
#[tokio::test]
async fn servicebus_adapter_says_when_a_topic_lacks_duplicate_detection() {
    let logs = common::testing::LogCapture::start(tracing::Level::WARN, false);
    let (broker, bus) = fake_servicebus();
    broker.create_topic_without_duplicate_detection("legacy-events");
    bus.ensure_subscription("legacy-events", "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    bus.ensure_subscription("fresh-events", "s", options(10, Duration::from_secs(30)))
        .await
        .unwrap();
    let logged = logs.text();
    assert!(
        logged.contains("legacy-events") && logged.contains("without duplicate detection"),
        "{logged}"
    );
    assert!(!logged.contains("fresh-events"), "{logged}");
}
