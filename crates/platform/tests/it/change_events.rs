//! Catalog publishes its product and stock changes as events: every change, in order per
//! SKU, each with its schema, whatever made it (the API, a reservation, a delete).

use std::time::Duration;

use std::sync::Mutex;

use common::bus::SharedBus;
use serde_json::{Value, json};

use crate::helpers::*;

const WATCHER: &str = "change-watcher";

/// Takes what the watcher's subscription holds, keeping the events about `EV-` SKUs.
async fn take(bus: &SharedBus, into: &Mutex<Vec<(String, Value)>>) {
    let topic = common::bus::topics::CATALOG;
    for delivery in bus.receive(topic, WATCHER, 100).await.unwrap() {
        bus.complete(topic, WATCHER, &delivery.lock).await.unwrap();
        let event = &delivery.message.event;
        if event
            .subject
            .as_deref()
            .is_some_and(|s| s.starts_with("EV-"))
        {
            into.lock()
                .unwrap()
                .push((event.event_type.clone(), event.data.clone()));
        }
    }
}

#[tokio::test]
async fn product_and_stock_changes_are_published_in_order_per_sku() {
    let platform = Platform::start().await;
    let bus = common::runtime::adapters::open_bus(&platform.settings).unwrap();
    bus.ensure_subscription(common::bus::topics::CATALOG, WATCHER, Default::default())
        .await
        .unwrap();
    platform.product("EV-1", "2.00", 5).await;
    let placed = platform
        .place("c-ev", json!([{"sku": "EV-1", "quantity": 2}]), None)
        .await;
    let order: Value = placed.json().await.unwrap();
    let confirmed = platform.settled(order["id"].as_str().unwrap()).await;
    assert_eq!(confirmed["status"], "confirmed");
    platform.product("EV-2", "1.00", 0).await;
    let deleted = platform
        .http
        .delete(format!("{}/v2/products/EV-2", platform.catalog_url))
        .bearer_auth(&platform.token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let collected = Mutex::new(Vec::new());
    let all_seen = eventually(Duration::from_secs(30), || async {
        take(&bus, &collected).await;
        let events = collected.lock().unwrap();
        events
            .iter()
            .any(|(t, _)| t == "catalog.product.deleted.v1")
            && events
                .iter()
                .any(|(t, d)| t == "catalog.stock.changed.v1" && d["reserved"] == 2)
    })
    .await;
    let events = collected.into_inner().unwrap();
    assert!(all_seen, "not every change was published: {events:?}");
    let of = |sku: &str, kind: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|(t, d)| t == kind && d["sku"] == sku)
            .map(|(_, d)| d.clone())
            .collect()
    };
    let ev1_products = of("EV-1", "catalog.product.changed.v1");
    assert_eq!(ev1_products.len(), 1, "{events:?}");
    assert_eq!(
        ev1_products[0]["price"],
        json!({"amount": "2.00", "currency": "EUR"})
    );
    let ev1_stock: Vec<(i64, i64)> = of("EV-1", "catalog.stock.changed.v1")
        .iter()
        .map(|d| {
            (
                d["onHand"].as_i64().unwrap(),
                d["reserved"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ev1_stock.last(), Some(&(5, 2)), "{events:?}");
    assert!(ev1_stock.contains(&(5, 0)), "{events:?}");
    assert_eq!(of("EV-2", "catalog.product.deleted.v1").len(), 1);
    let seen = platform.stop().await;
    for kind in [
        "catalog.product.changed.v1",
        "catalog.stock.changed.v1",
        "catalog.product.deleted.v1",
    ] {
        assert!(seen.contains(kind), "{kind} not published: {seen:?}");
    }
}
