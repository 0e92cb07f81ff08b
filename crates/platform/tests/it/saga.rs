use std::time::Duration;

use common::bus::topics;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn cancelling_a_confirmed_order_releases_its_stock() {
    let platform = Platform::start().await;
    platform.product("C-1", "5.00", 10).await;
    let order: Value = platform
        .place("cust-2", json!([{"sku": "C-1", "quantity": 4}]), None)
        .await
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(platform.settled(&id).await["status"], "confirmed");
    assert_eq!(platform.stock("C-1").await["reserved"], 4);

    let cancel = |if_match: Option<&str>| {
        let mut request = platform
            .http
            .post(format!("{}/v1/orders/{id}/cancel", platform.orders_url))
            .bearer_auth(&platform.token);
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        request.send()
    };
    assert_eq!(cancel(Some("\"stale\"")).await.unwrap().status(), 412);
    let cancelled = cancel(None).await.unwrap();
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );
    let released = eventually(Duration::from_secs(30), || async {
        platform.stock("C-1").await["reserved"] == 0
    })
    .await;
    assert!(released, "stock was not released");
    // Cancelled is final.
    let again = cancel(None).await.unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(again.headers()["content-type"], "application/problem+json");

    // A pending or rejected order cannot be cancelled either.
    platform.count("C-1", 0).await;
    let rejected: Value = platform
        .place("cust-2", json!([{"sku": "C-1", "quantity": 1}]), None)
        .await
        .json()
        .await
        .unwrap();
    let rejected_id = rejected["id"].as_str().unwrap();
    assert_eq!(platform.settled(rejected_id).await["status"], "rejected");
    let refused = platform
        .http
        .post(format!(
            "{}/v1/orders/{rejected_id}/cancel",
            platform.orders_url
        ))
        .bearer_auth(&platform.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    // A product that goes away (for `catalog.product.deleted.v1`).
    platform.product("GONE-1", "1.00", 0).await;
    let deleted = platform
        .http
        .delete(format!("{}/v2/products/GONE-1", platform.catalog_url))
        .bearer_auth(&platform.token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    // Every event type of the saga went out, each as its schema says.
    let published = platform.stop().await;
    // (An endpoint disabled is another story: notifications' own tests see it.)
    let every_type: std::collections::BTreeSet<String> = common::events::all()
        .iter()
        .map(|c| c.event_type.to_owned())
        .filter(|t| t != <common::events::EndpointDisabled as common::events::EventType>::TYPE)
        .collect();
    assert_eq!(published, every_type);
}

#[tokio::test]
async fn an_idempotency_key_gives_one_order() {
    let platform = Platform::start().await;
    platform.product("I-1", "1.00", 10).await;
    let lines = json!([{"sku": "I-1", "quantity": 1}]);
    let first: Value = platform
        .place("cust-3", lines.clone(), Some("key-1"))
        .await
        .json()
        .await
        .unwrap();
    let second = platform.place("cust-3", lines.clone(), Some("key-1")).await;
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);

    // Concurrent repeats of one key: still one order.
    let repeats = futures::future::join_all(
        (0..8).map(|_| platform.place("cust-3", lines.clone(), Some("key-2"))),
    )
    .await;
    let mut ids = Vec::new();
    for response in repeats {
        assert_eq!(response.status(), 202);
        ids.push(
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    // Records kept beside orders are not orders.
    let record = platform
        .http
        .get(format!(
            "{}/v1/orders/idempotency-key-1",
            platform.orders_url
        ))
        .bearer_auth(&platform.token)
        .send()
        .await
        .unwrap();
    assert_eq!(record.status(), 404);

    let different = platform
        .place(
            "cust-3",
            json!([{"sku": "I-1", "quantity": 2}]),
            Some("key-1"),
        )
        .await;
    assert_eq!(different.status(), 422);
    // The key belongs to the client, whatever customer the body names.
    let other_customer = platform
        .place(
            "cust-4",
            json!([{"sku": "I-1", "quantity": 1}]),
            Some("key-1"),
        )
        .await;
    assert_eq!(other_customer.status(), 422);
    assert!(
        platform.list("customerId=cust-4").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Another client's key-1 is its own.
    let other_client = common::auth::mint_dev_token(
        &secrecy::SecretString::from(SECRET.to_owned()),
        &platform.settings.auth,
        "someone-else",
        ALL,
        600,
    )
    .unwrap();
    let theirs = platform
        .http
        .post(format!("{}/v1/orders", platform.orders_url))
        .bearer_auth(other_client)
        .header("idempotency-key", "key-1")
        .json(&json!({"customerId": "cust-4", "lines": [{"sku": "I-1", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 202);

    let all = platform.list("customerId=cust-3").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let reserved = eventually(Duration::from_secs(30), || async {
        platform.stock("I-1").await["reserved"] == 3
    })
    .await;
    assert!(reserved);
    platform.stop().await;
}

#[tokio::test]
async fn bad_orders_get_problems() {
    let platform = Platform::start().await;
    platform.product("V-1", "1.00", 1).await;
    let unknown = platform
        .place(
            "c",
            json!([{"sku": "V-1", "quantity": 1}, {"sku": "NOPE", "quantity": 1}]),
            None,
        )
        .await;
    assert_eq!(unknown.status(), 422);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "lines.1.sku");

    // A SKU that would steer the price call elsewhere (`V-1?x` priced as `V-1`, or another
    // route of the catalog under the caller's identity) never reaches the catalog.
    for sku in [
        "V-1?x",
        "V-1#x",
        "../v1/products/V-1",
        "V-1/stock",
        "V%2D1",
        " V-1",
    ] {
        let refused = platform
            .place("c", json!([{"sku": sku, "quantity": 1}]), None)
            .await;
        assert_eq!(refused.status(), 422, "{sku}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "lines.0.sku", "{sku}");
    }

    let cases = [
        json!({"customerId": "", "lines": []}),
        json!({"customerId": "c", "lines": [{"sku": "V-1", "quantity": 0}]}),
        json!({"customerId": "c", "lines": [{"sku": "V-1", "quantity": 1}, {"sku": "V-1", "quantity": 1}]}),
        json!({"customerId": "c", "lines": "V-1"}),
        json!({"customerId": "c", "lines": [{"sku": "V-1", "quantity": 1, "colour": "red"}], "extra": 1}),
    ];
    for body in cases {
        let response = platform
            .http
            .post(format!("{}/v1/orders", platform.orders_url))
            .bearer_auth(&platform.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let too_many: Vec<Value> = (0..51)
        .map(|n| json!({"sku": format!("S-{n}"), "quantity": 1}))
        .collect();
    assert_eq!(
        platform
            .place("c", Value::Array(too_many), None)
            .await
            .status(),
        422
    );
    let bad_key = platform
        .place(
            "c",
            json!([{"sku": "V-1", "quantity": 1}]),
            Some("has space"),
        )
        .await;
    assert_eq!(bad_key.status(), 422);
    let missing = platform
        .http
        .get(format!("{}/v1/orders/does-not-exist", platform.orders_url))
        .bearer_auth(&platform.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let wrong_scope = common::auth::mint_dev_token(
        &secrecy::SecretString::from(SECRET.to_owned()),
        &platform.settings.auth,
        "x",
        "orders.read",
        60,
    )
    .unwrap();
    let forbidden = platform
        .http
        .post(format!("{}/v1/orders", platform.orders_url))
        .bearer_auth(wrong_scope)
        .json(&json!({"customerId": "c", "lines": [{"sku": "V-1", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    platform.stop().await;
}

#[tokio::test]
async fn an_unreachable_catalog_is_a_clear_503() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Orders alone, pointed at a port where nothing listens.
    let platform = Platform::launch(
        &["orders"],
        &[
            ("catalog.attempts", "2".to_owned()),
            ("catalog.timeout_ms", "500".to_owned()),
            ("catalog.url", format!("http://{closed}")),
        ],
        |_| {},
        None,
    )
    .await;
    let response = platform
        .place("c", json!([{"sku": "X-1", "quantity": 1}]), None)
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:problem:unavailable");
    platform.stop().await;
}

#[tokio::test]
async fn a_poison_event_lands_in_the_dead_letter_queue_and_the_cli_shows_it() {
    let platform = Platform::start().await;
    let bus = common::runtime::adapters::open_bus(&platform.settings).unwrap();
    let poison = platform.publish_poison("o-1").await;
    let dead = eventually(Duration::from_secs(30), || {
        let bus = bus.clone();
        async move {
            !bus.dead_letters(topics::ORDERS, "catalog", 10)
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    assert!(dead);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_platform"))
        .args(["dlq", "list", "--data-dir"])
        .arg(platform.dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let listed = String::from_utf8(output.stdout).unwrap();
    assert!(listed.contains(&poison.id), "{listed}");
    assert!(listed.contains("HandlerRejected"), "{listed}");

    // `platform dlq <action>` on the poison event's letter.
    let on_the_letter = |action: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_platform"))
            .args([
                "dlq",
                action,
                "--topic",
                topics::ORDERS,
                "--subscription",
                "catalog",
                "--id",
                &poison.id,
                "--data-dir",
            ])
            .arg(platform.dir.path())
            .output()
            .unwrap()
    };
    let replay = on_the_letter("replay");
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    // Still poison: it comes back to the dead-letter queue.
    let back = eventually(Duration::from_secs(30), || {
        let bus = bus.clone();
        async move {
            bus.dead_letters(topics::ORDERS, "catalog", 10)
                .await
                .unwrap()
                .len()
                == 1
        }
    })
    .await;
    assert!(back);

    // Discarded, it is gone for good; a second discard says it is not there.
    let discard = || on_the_letter("discard");
    let discarded = discard();
    assert!(
        discarded.status.success(),
        "{}",
        String::from_utf8_lossy(&discarded.stderr)
    );
    assert!(
        bus.dead_letters(topics::ORDERS, "catalog", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!discard().status.success());
    platform.stop().await;
}

#[tokio::test]
async fn the_saga_runs_on_the_service_bus_adapter_too() {
    use common::bus::servicebus::ServiceBusBus;
    use common::testing::fake_servicebus::FakeServiceBus;

    let broker = std::sync::Arc::new(FakeServiceBus::new());
    let bus = ServiceBusBus::new(
        broker.clone(),
        &broker.namespace,
        &broker.policy,
        broker.key.clone().into(),
    );
    let platform = Platform::start_on_bus(|_| {}, Some(std::sync::Arc::new(bus))).await;
    platform.product("SB-1", "4.00", 1).await;
    let first: Value = platform
        .place("sb", json!([{"sku": "SB-1", "quantity": 1}]), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        platform.settled(first["id"].as_str().unwrap()).await["status"],
        "confirmed"
    );
    let second: Value = platform
        .place("sb", json!([{"sku": "SB-1", "quantity": 1}]), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        platform.settled(second["id"].as_str().unwrap()).await["status"],
        "rejected"
    );
    assert_eq!(platform.stock("SB-1").await["reserved"], 1);
    assert_eq!(broker.refused.load(std::sync::atomic::Ordering::SeqCst), 0);
    // placed, reserved, confirmed, placed, reservation-failed, rejected: all through the broker.
    let all_sent = eventually(Duration::from_secs(30), || async {
        broker.sent.load(std::sync::atomic::Ordering::SeqCst) >= 6
    })
    .await;
    assert!(
        all_sent,
        "sent {}",
        broker.sent.load(std::sync::atomic::Ordering::SeqCst)
    );
    platform.stop().await;
}

#[tokio::test]
async fn a_failing_catalog_is_a_424() {
    // A catalog that answers every price request with a 500.
    let (failing, server_handle) = crate::helpers::serve_stub(|config| {
        config.default_service(actix_web::web::to(|| async {
            actix_web::HttpResponse::InternalServerError().finish()
        }));
    });

    let platform = Platform::launch(
        &["orders"],
        &[
            ("catalog.attempts", "2".to_owned()),
            ("catalog.url", failing.clone()),
        ],
        |_| {},
        None,
    )
    .await;
    let response = platform
        .place("c", json!([{"sku": "X-1", "quantity": 1}]), None)
        .await;
    assert_eq!(response.status(), 424);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:problem:dependency-failed");
    // Nothing was stored.
    assert!(
        platform.list("customerId=c").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    platform.stop().await;
    server_handle.stop(true).await;
}
