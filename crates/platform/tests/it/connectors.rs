//! Connectors: sync replicates order changes to an external system over HTTP, in order per
//! order, with its credentials; a receiver that fails gets the changes parked, visible and
//! sent again on request; targets on private addresses are refused unless allowed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::helpers::*;

/// An external system: records what it is sent, and fails while told to.
/// What a receiver got: each request's `Authorization` and body.
type Received = Arc<Mutex<Vec<(Option<String>, Value)>>>;

struct Receiver {
    url: String,
    received: Received,
    failing: Arc<AtomicBool>,
    /// What it answers to `GET` (its stock levels, as a stock source).
    levels: Arc<Mutex<Value>>,
    _server: actix_web::dev::ServerHandle,
}

async fn receiver() -> Receiver {
    let received: Received = Arc::default();
    let failing = Arc::new(AtomicBool::new(false));
    let levels = Arc::new(Mutex::new(json!([])));
    let (state, fail, stock) = (received.clone(), failing.clone(), levels.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/erp/changes", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        let (state, fail) = (state.clone(), fail.clone());
        let stock = stock.clone();
        App::new()
            .route(
                "/erp/changes",
                web::get().to(move || {
                    let stock = stock.clone();
                    async move { HttpResponse::Ok().json(stock.lock().unwrap().clone()) }
                }),
            )
            .route(
                "/erp/changes",
                web::post().to(move |req: HttpRequest, body: web::Json<Value>| {
                    let (state, fail) = (state.clone(), fail.clone());
                    async move {
                        if fail.load(Ordering::SeqCst) {
                            return HttpResponse::ServiceUnavailable().body("down for maintenance");
                        }
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        state.lock().unwrap().push((auth, body.into_inner()));
                        HttpResponse::NoContent().finish()
                    }
                }),
            )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Receiver {
        url,
        received,
        failing,
        levels,
        _server: handle,
    }
}

fn overrides() -> Vec<(&'static str, String)> {
    vec![
        ("connectors.allow_private_targets", "true".to_owned()),
        ("connectors.retry_schedule_ms", "[20, 20]".to_owned()),
        ("connectors.poll_interval_ms", "20".to_owned()),
    ]
}

async fn post(platform: &Platform, path: &str, body: Value) -> reqwest::Response {
    platform
        .http
        .post(format!("{}{path}", platform.sync_url))
        .bearer_auth(&platform.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The event types the receiver got for `order`, in order.
fn types_for(receiver: &Receiver, order: &str) -> Vec<String> {
    receiver
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, event)| event["data"]["orderId"] == order)
        .map(|(_, event)| event["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

async fn place(platform: &Platform, customer: &str) -> String {
    let placed: Value = platform
        .place(customer, json!([{"sku": "CN-1", "quantity": 1}]), None)
        .await
        .json()
        .await
        .unwrap();
    let id = placed["id"].as_str().unwrap().to_owned();
    assert_eq!(platform.settled(&id).await["status"], "confirmed");
    id
}

#[tokio::test]
async fn order_changes_reach_a_connector_in_order_and_parked_ones_are_sent_again() {
    let receiver = receiver().await;
    let platform = Platform::launch(&[], &overrides(), |_| {}, None).await;
    let created = post(
        &platform,
        "/v1/connectors",
        json!({"name": "ERP", "url": receiver.url, "entities": ["orders"],
               "auth": {"kind": "bearer", "token": "erp-secret-token"}}),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert!(created.headers().get("etag").is_some());
    let connector: Value = created.json().await.unwrap();
    assert_eq!(connector["auth"], "bearer");
    assert!(!connector.to_string().contains("erp-secret-token"));
    let id = connector["id"].as_str().unwrap().to_owned();

    platform.product("CN-1", "4.00", 100).await;
    let first = place(&platform, "cn-a").await;
    let delivered = eventually(Duration::from_secs(20), || async {
        types_for(&receiver, &first).len() == 2
    })
    .await;
    assert!(delivered, "the order's changes did not arrive");
    assert_eq!(
        types_for(&receiver, &first),
        ["orders.order.placed.v1", "orders.order.confirmed.v1"]
    );
    assert!(
        receiver
            .received
            .lock()
            .unwrap()
            .iter()
            .all(|(auth, _)| auth.as_deref() == Some("Bearer erp-secret-token"))
    );

    // The receiver goes down: the next order's changes are tried, then parked, in order.
    receiver.failing.store(true, Ordering::SeqCst);
    let second = place(&platform, "cn-b").await;
    let status_url = format!("{}/v1/connectors/{id}/status", platform.sync_url);
    let parked = eventually(Duration::from_secs(20), || async {
        platform.get_json(status_url.clone()).await["parked"]
            .as_array()
            .is_some_and(|p| p.len() == 2)
    })
    .await;
    let status = platform.get_json(status_url.clone()).await;
    assert!(parked, "the changes were not parked: {status}");
    assert!(status["failures"].as_u64().unwrap() >= 3, "{status}");
    assert!(
        status["lastError"].as_str().unwrap().contains("503"),
        "{status}"
    );
    assert_eq!(status["parked"][0]["type"], "orders.order.placed.v1");
    assert!(types_for(&receiver, &second).is_empty());

    // Back up: a retry sends what was parked, still in order.
    receiver.failing.store(false, Ordering::SeqCst);
    let retried: Value = post(&platform, &format!("/v1/connectors/{id}/retry"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(retried["retried"], 2);
    let caught_up = eventually(Duration::from_secs(20), || async {
        types_for(&receiver, &second).len() == 2
    })
    .await;
    assert!(caught_up, "the parked changes were not sent again");
    assert_eq!(
        types_for(&receiver, &second),
        ["orders.order.placed.v1", "orders.order.confirmed.v1"]
    );
    let status = platform.get_json(status_url).await;
    assert_eq!(status["delivered"], 4, "{status}");
    assert_eq!(status["lag"]["count"], 0, "{status}");
    assert_eq!(status["parked"], json!([]));

    // Paused, changes wait; resumed, they arrive.
    let paused = post(&platform, &format!("/v1/connectors/{id}/pause"), json!({})).await;
    assert_eq!(paused.status(), 200);
    let third = place(&platform, "cn-c").await;
    let waiting = eventually(Duration::from_secs(20), || async {
        platform
            .get_json(format!("{}/v1/connectors/{id}/status", platform.sync_url))
            .await["lag"]["count"]
            == 2
    })
    .await;
    assert!(waiting);
    assert!(types_for(&receiver, &third).is_empty());
    post(&platform, &format!("/v1/connectors/{id}/resume"), json!({})).await;
    let resumed = eventually(Duration::from_secs(20), || async {
        types_for(&receiver, &third).len() == 2
    })
    .await;
    assert!(resumed, "changes queued while paused did not arrive");
    platform.stop().await;
}

#[tokio::test]
async fn connectors_are_checked_and_their_secrets_never_shown() {
    // Default settings: private targets refused.
    let platform = Platform::launch(&["sync"], &[], |_| {}, None).await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://169.254.169.254/latest",
        "http://localhost:9/",
        "ftp://x.example/",
    ] {
        let refused = post(
            &platform,
            "/v1/connectors",
            json!({"name": "x", "url": url, "entities": ["orders"]}),
        )
        .await;
        assert_eq!(refused.status(), 422, "{url}");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "url", "{url}");
    }
    let bad = post(
        &platform,
        "/v1/connectors",
        json!({"name": "", "url": "https://erp.example", "entities": ["invoices"],
               "auth": {"kind": "hmac", "secret": "short"}}),
    )
    .await;
    assert_eq!(bad.status(), 422);
    let problem: Value = bad.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "entities", "auth.secret"]);
    platform.stop().await;
}

#[tokio::test]
async fn a_connector_that_was_down_gets_everything_when_it_is_back() {
    let receiver = receiver().await;
    let mut overrides = overrides();
    // Long enough a schedule that the outage heals before anything is parked.
    overrides[1] = (
        "connectors.retry_schedule_ms",
        format!("[{}]", ["30"; 200].join(", ")),
    );
    let platform = Platform::launch(&[], &overrides, |_| {}, None).await;
    let created: Value = post(
        &platform,
        "/v1/connectors",
        json!({"name": "WMS", "url": receiver.url, "entities": ["orders", "stock"],
               "auth": {"kind": "hmac", "secret": "a-shared-secret-of-some-length"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    receiver.failing.store(true, Ordering::SeqCst);
    platform.product("CN-1", "4.00", 100).await;
    let first = place(&platform, "cn-down-1").await;
    let second = place(&platform, "cn-down-2").await;
    let status_url = format!("{}/v1/connectors/{id}/status", platform.sync_url);
    let failing = eventually(Duration::from_secs(20), || async {
        platform.get_json(status_url.clone()).await["failures"]
            .as_u64()
            .is_some_and(|n| n >= 3)
    })
    .await;
    assert!(failing);
    receiver.failing.store(false, Ordering::SeqCst);
    let caught_up = eventually(Duration::from_secs(20), || async {
        types_for(&receiver, &first).len() == 2 && types_for(&receiver, &second).len() == 2
    })
    .await;
    assert!(
        caught_up,
        "the changes made while it was down did not arrive"
    );
    let received = receiver.received.lock().unwrap().clone();
    // Stock changes came too (the product's count, two reservations), newest last.
    let stock: Vec<i64> = received
        .iter()
        .filter(|(_, e)| e["type"] == "catalog.stock.changed.v1")
        .map(|(_, e)| e["data"]["reserved"].as_i64().unwrap())
        .collect();
    assert_eq!(stock.last(), Some(&2), "{stock:?}");
    // HMAC deliveries carry no bearer token.
    assert!(received.iter().all(|(auth, _)| auth.is_none()));
    assert_eq!(platform.get_json(status_url).await["parked"], json!([]));
    platform.stop().await;
}

#[tokio::test]
async fn reconciliation_pulls_stock_levels_from_a_source_and_reports_the_drift() {
    let receiver = receiver().await;
    let mut overrides = overrides();
    overrides.push(("timers.reconcile", String::new()));
    let platform = Platform::launch(&[], &overrides, |_| {}, None).await;
    platform.product("RC-1", "1.00", 5).await;
    platform.product("RC-2", "1.00", 3).await;
    *receiver.levels.lock().unwrap() = json!([
        {"sku": "RC-1", "onHand": 9},
        {"sku": "RC-2", "onHand": 3},
        {"sku": "NOPE-1", "onHand": 4}
    ]);
    let created = post(
        &platform,
        "/v1/connectors",
        json!({"name": "Warehouse", "url": receiver.url, "entities": ["stockSource"]}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let report: Value = post(&platform, "/v1/reconciliations", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["trigger"], "request");
    let source = &report["sources"][0];
    assert_eq!(source["checked"], 3, "{report}");
    assert_eq!(
        source["drift"],
        json!([
            {"sku": "RC-1", "catalog": 5, "source": 9, "fixed": true},
            {"sku": "NOPE-1", "catalog": null, "source": 4, "fixed": false,
             "error": "the catalog has no such product"}
        ]),
        "{report}"
    );
    assert_eq!(platform.stock("RC-1").await["onHand"], 9);
    // A stock source gets no changes sent.
    assert!(receiver.received.lock().unwrap().is_empty());
    let listed = platform
        .get_json(format!("{}/v1/reconciliations", platform.sync_url))
        .await;
    assert_eq!(listed["items"][0]["id"], report["id"]);
    platform.stop().await;
}

#[tokio::test]
async fn the_reconcile_timer_runs_on_its_schedule() {
    let mut overrides = overrides();
    overrides.push(("timers.reconcile", "* * * * * *".to_owned()));
    let platform = Platform::launch(&["sync"], &overrides, |_| {}, None).await;
    let ran = eventually(Duration::from_secs(20), || async {
        platform
            .get_json(format!("{}/v1/reconciliations", platform.sync_url))
            .await["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["trigger"] == "timer"))
    })
    .await;
    assert!(ran, "the timer did not run");
    platform.stop().await;
}
