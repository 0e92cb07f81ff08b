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
            http: reqwest::Client::new(),
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
            }
        }
        self.invocations - before
    }
}

#[tokio::test]
async fn an_order_is_confirmed_through_trigger_invocations_alone() {
    let platform = Platform::launch(
        &["catalog", "orders"],
        &[],
        |settings: &mut Settings| settings.hosting.mode = HostingMode::Functions,
        None,
    )
    .await;
    let functions: Vec<String> = platform
        .triggers()
        .iter()
        .map(|(_, spec)| spec.function.clone())
        .collect();
    for expected in [
        "fn-bus-catalog",
        "fn-bus-orders",
        "fn-feed-orders-outbox-relay",
        "fn-feed-stock-outbox-relay",
    ] {
        assert!(
            functions.iter().any(|f| f == expected),
            "{expected} in {functions:?}"
        );
    }
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
