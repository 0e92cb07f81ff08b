//! Custom-handler mode: the services run no loop of their own; a stand-in for the Functions
//! host (reading the bus and the change feeds as the host's triggers do) invokes them with
//! the documented payloads, and an order reaches `confirmed` through those invocations alone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::config::{HostingMode, Settings};
use common::runtime::functions::{TriggerBinding, TriggerSpec, feed_item};
use common::store::{Checkpoint, SharedStore};
use serde_json::{Value, json};

use crate::helpers::*;

/// What the Functions host does between the services' invocations.
struct FunctionsHost {
    http: reqwest::Client,
    bus: common::bus::SharedBus,
    /// Each service's store, by the base URL of the service.
    stores: BTreeMap<String, SharedStore>,
    triggers: Vec<(String, TriggerSpec)>,
    /// The change-feed checkpoint of each function (the host's leases container).
    checkpoints: BTreeMap<String, Checkpoint>,
    invocations: usize,
}

impl FunctionsHost {
    async fn new(platform: &Platform, services: &[&str]) -> Self {
        let bus = common::runtime::adapters::open_bus(&platform.settings).unwrap();
        let mut stores = BTreeMap::new();
        for descriptor in platform::registry::descriptors() {
            if !services.contains(&descriptor.name) {
                continue;
            }
            let url = platform.url_of(descriptor.name);
            let store = common::runtime::adapters::open_store(
                &platform.settings,
                descriptor.name,
                &descriptor.all_containers(),
            )
            .await
            .unwrap();
            stores.insert(url, store);
        }
        Self {
            // A connection per invocation: a pooled one the service closed while idle would
            // fail the next invocation (the host itself retries those).
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            bus,
            stores,
            triggers: platform.triggers(),
            checkpoints: BTreeMap::new(),
            invocations: 0,
        }
    }

    async fn invoke(&mut self, url: &str, function: &str, invocation: Value) -> bool {
        self.invocations += 1;
        let answer = self
            .http
            .post(format!("{url}/{function}"))
            .json(&invocation)
            .send()
            .await
            .unwrap();
        let ok = answer.status() == 200;
        let body: Value = answer.json().await.unwrap();
        assert!(
            body.get("Outputs").is_some() && body.get("Logs").is_some(),
            "{body}"
        );
        ok
    }

    /// One round over every trigger; returns how many invocations it made.
    async fn round(&mut self) -> usize {
        let before = self.invocations;
        for (url, spec) in self.triggers.clone() {
            match spec.binding {
                TriggerBinding::ServiceBus {
                    topic,
                    subscription,
                } => {
                    let deliveries = self.bus.receive(topic, subscription, 16).await.unwrap();
                    for delivery in deliveries {
                        let message = &delivery.message;
                        let invocation = json!({
                            "Data": {"message": serde_json::to_string(&message.event).unwrap()},
                            "Metadata": {
                                "MessageId": message.event.id,
                                "DeliveryCount": delivery.delivery_count,
                                "CorrelationId": message.correlation_id,
                                "ContentType": "application/cloudevents+json",
                                "ApplicationProperties": message.properties,
                                "sys": {"MethodName": spec.function, "UtcNow": "2026-11-26T16:00:00Z"},
                            },
                        });
                        if self.invoke(&url, &spec.function, invocation).await {
                            self.bus
                                .complete(topic, subscription, &delivery.lock)
                                .await
                                .unwrap();
                        } else {
                            self.bus
                                .abandon(topic, subscription, &delivery.lock, Duration::ZERO)
                                .await
                                .unwrap();
                        }
                    }
                }
                TriggerBinding::ChangeFeed { container, .. } => {
                    let store = self.stores[&url].clone();
                    let since = self.checkpoints.get(&spec.function);
                    let batch = store.changes(container, since, 100).await.unwrap();
                    if !batch.documents.is_empty() {
                        let items: Vec<Value> = batch.documents.iter().map(feed_item).collect();
                        let invocation = json!({
                            "Data": {"documents": serde_json::to_string(&items).unwrap()},
                            "Metadata": {"sys": {"MethodName": spec.function}},
                        });
                        // The host hands a failed batch again (the function's retry policy).
                        if !self.invoke(&url, &spec.function, invocation).await {
                            continue;
                        }
                    }
                    self.checkpoints
                        .insert(spec.function.clone(), batch.checkpoint);
                }
                // Fired by `fire`, when a test says the time has come or a blob arrived.
                TriggerBinding::Timer { .. } | TriggerBinding::Blob { .. } => {}
            }
        }
        self.invocations - before
    }

    /// Invokes a timer or blob function with the documented payload of its trigger.
    async fn fire(&mut self, function: &str) -> bool {
        let (url, spec) = self
            .triggers
            .iter()
            .find(|(_, spec)| spec.function == function)
            .cloned()
            .unwrap_or_else(|| panic!("no function {function}"));
        let fixture = match spec.binding {
            TriggerBinding::Timer { .. } => "timer-trigger.json",
            TriggerBinding::Blob { .. } => "blob-trigger.json",
            _ => panic!("{function} is not fired by time or blob"),
        };
        let path = format!(
            "{}/../common/tests/fixtures/functions/{fixture}",
            env!("CARGO_MANIFEST_DIR")
        );
        let invocation: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        self.invoke(&url, function, invocation).await
    }
}

/// The services named, as Azure Functions custom handlers (no loop of their own), checked
/// to declare at least the `expected` trigger functions.
async fn custom_handlers(
    only: &[&str],
    overrides: &[(&str, String)],
    expected: &[&str],
) -> Platform {
    let platform = Platform::launch(
        only,
        overrides,
        |settings: &mut Settings| settings.hosting.mode = HostingMode::Functions,
        None,
    )
    .await;
    let functions: Vec<String> = platform
        .triggers()
        .iter()
        .map(|(_, spec)| spec.function.clone())
        .collect();
    for function in expected {
        assert!(
            functions.iter().any(|f| f == function),
            "{function} in {functions:?}"
        );
    }
    platform
}

#[tokio::test]
async fn an_order_is_confirmed_through_trigger_invocations_alone() {
    let platform = custom_handlers(
        &["catalog", "orders"],
        &[],
        &[
            "fn-bus-catalog",
            "fn-bus-orders",
            "fn-feed-orders-outbox-relay",
            "fn-feed-stock-outbox-relay",
        ],
    )
    .await;
    let mut host = FunctionsHost::new(&platform, &["catalog", "orders"]).await;

    platform.product("FN-1", "2.50", 10).await;
    let placed = platform
        .place("fn-customer", json!([{"sku": "FN-1", "quantity": 3}]), None)
        .await;
    assert_eq!(placed.status(), 202);
    let id = placed.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Nothing moves by itself: no worker, no relay.
    assert_eq!(platform.order(&id).await["status"], "pending");
    let deadline = Instant::now() + Duration::from_secs(30);
    while platform.order(&id).await["status"] == "pending" {
        assert!(Instant::now() < deadline, "the order stayed pending");
        if host.round().await == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(platform.order(&id).await["status"], "confirmed");
    assert_eq!(platform.stock("FN-1").await["reserved"], 3);
    // The product list's view is kept by its trigger too.
    while host.round().await > 0 {}
    let list = platform
        .get_json(format!("{}/v2/products?category=e2e", platform.catalog_url))
        .await;
    assert_eq!(list["items"][0]["sku"], "FN-1", "{list}");

    // A trigger route answers only the host, on loopback, and knows its functions.
    let unknown = host
        .http
        .post(format!("{}/fn-bus-nothing", platform.orders_url))
        .json(&json!({"Data": {}, "Metadata": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let broken = host
        .http
        .post(format!("{}/fn-bus-orders", platform.orders_url))
        .json(&json!({"Data": {"message": "not json"}, "Metadata": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 500);
    platform.stop().await;
}

#[tokio::test]
async fn feeds_webhooks_and_their_retries_run_on_blob_timer_and_bus_triggers() {
    use crate::notifications::{ANSWER_DOWN, ANSWER_OK, WebhookReceiver, overrides, subscribe};
    let receiver = WebhookReceiver::start();
    receiver.set(ANSWER_DOWN);
    let platform = custom_handlers(
        &["catalog", "sync", "notifications"],
        &overrides("[0, 10, 10, 10, 10, 10, 10, 10, 10, 10]", None),
        &[
            "fn-blob-uploads",
            "fn-blob-incoming",
            "fn-timer-imports",
            "fn-timer-connectors",
            "fn-timer-reconcile",
            "fn-timer-webhook-retries",
            "fn-timer-retention",
            "fn-bus-notifications-orders",
            "fn-feed-subscriptions-outbox-relay",
        ],
    )
    .await;
    let mut host = FunctionsHost::new(&platform, &["catalog", "sync", "notifications"]).await;

    // A feed uploaded is imported when its blob trigger fires.
    let feed = "sku,name,category,price,currency,onHand\nFN-BLOB-1,Blob,tools,1.00,EUR,5\n";
    let uploaded = platform
        .http
        .post(format!("{}/v1/imports?name=feed.csv", platform.sync_url))
        .bearer_auth(&platform.token)
        .header("content-type", "text/csv")
        .body(feed)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 202);
    let job: Value = uploaded.json().await.unwrap();
    let job_url = format!(
        "{}/v1/imports/{}",
        platform.sync_url,
        job["id"].as_str().unwrap()
    );
    assert_eq!(platform.get_json(job_url.clone()).await["state"], "queued");
    assert!(host.fire("fn-blob-uploads").await);
    let imported = platform.get_json(job_url).await;
    assert_eq!(imported["state"], "completed", "{imported}");
    assert_eq!(imported["created"], 1);

    // A webhook whose endpoint is down at first: sent within the bus trigger, then again by
    // the retry timer once the endpoint is back.
    let (subscription, secret) = subscribe(&platform, &receiver.url, json!(["orders.*"])).await;
    let bus = common::runtime::adapters::open_bus(&platform.settings).unwrap();
    let event = common::bus::CloudEvent::new(
        "orders",
        "orders.order.placed.v1",
        "fn-order-1",
        json!({"orderId": "fn-order-1", "customerId": "c", "lines": [{"sku": "FN-BLOB-1", "quantity": 1}]}),
    );
    bus.publish(
        common::bus::topics::ORDERS,
        common::bus::Message::new(event),
    )
    .await
    .unwrap();
    while host.round().await > 0 {}
    let pending = platform
        .get_json(format!(
            "{}/v1/messages?subscriptionId={subscription}&status=pending",
            platform.notifications_url
        ))
        .await;
    assert_eq!(pending["items"][0]["attempts"], 1, "{pending}");
    assert!(receiver.hooks().is_empty());
    receiver.set(ANSWER_OK);
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.hooks().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the retry timer did not send the message"
        );
        assert!(host.fire("fn-timer-webhook-retries").await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.hooks()[0].verifies(&secret).unwrap();
    assert!(host.fire("fn-timer-retention").await);
    assert!(host.fire("fn-timer-connectors").await);
    platform.stop().await;
}

/// `deploy/functions/` is what `platform functions` writes: every trigger the services
/// declare has its function.json, and nothing else is there.
#[tokio::test]
async fn the_committed_function_apps_are_what_the_services_declare() {
    let scratch = tempfile::tempdir().unwrap();
    platform::functions::write_apps(scratch.path(), &[])
        .await
        .unwrap();
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/functions");
    let files = |root: &std::path::Path| -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        let mut folders = vec![root.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|x| x == "json") {
                    let name = path.strip_prefix(root).unwrap().display().to_string();
                    found.insert(name, std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        found
    };
    let (expected, actual) = (files(scratch.path()), files(&committed));
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "run `cargo run -p platform -- functions` and commit deploy/functions"
    );
    for (name, text) in &expected {
        assert_eq!(
            &actual[name], text,
            "{name} differs: run `cargo run -p platform -- functions`"
        );
    }
    // Every function.json parses, and every trigger names what the service declares.
    let timer: Value =
        serde_json::from_str(&actual["notifications/fn-timer-webhook-retries/function.json"])
            .unwrap();
    assert_eq!(timer["bindings"][0]["type"], "timerTrigger");
    let bus: Value = serde_json::from_str(&actual["catalog/fn-bus-catalog/function.json"]).unwrap();
    assert_eq!(bus["bindings"][0]["topicName"], "orders-events");
    assert_eq!(bus["bindings"][0]["subscriptionName"], "catalog");
}
