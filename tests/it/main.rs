//! The acceptance suite: what a client of the platform sees, over HTTP only. Runs against
//! `platform up` started here, or against the deployment the environment names (see
//! `acceptance::Target`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use acceptance::Target;
use serde_json::{Value, json};

#[tokio::test]
async fn orders_are_confirmed_when_stock_suffices_and_rejected_when_short() {
    let target = Target::get().await;
    let (a, b) = (target.unique("A"), target.unique("B"));
    let customer = target.unique("cust");
    target.product(&a, "12.50", 3).await;
    target.product(&b, "0.10", 100).await;

    let placed = target
        .place(json!({"customerId": customer, "lines": [{"sku": a, "quantity": 2}, {"sku": b, "quantity": 3}]}))
        .await;
    assert_eq!(placed.status(), 202);
    let location = placed.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = placed.json().await.unwrap();
    assert_eq!(order["status"], "pending");
    assert_eq!(order["total"], "25.30");
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["lines"][0]["unitPrice"], "12.50");
    assert_eq!(
        location,
        format!("/v1/orders/{}", order["id"].as_str().unwrap())
    );

    let confirmed = target.settled(order["id"].as_str().unwrap()).await;
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(
        target.stock(&a).await,
        json!({"sku": a, "onHand": 3, "reserved": 2, "available": 1})
    );
    assert_eq!(target.stock(&b).await["reserved"], 3);

    // All or none: B could be reserved, A cannot, so neither is.
    let short: Value = target
        .place(json!({"customerId": customer, "lines": [{"sku": b, "quantity": 1}, {"sku": a, "quantity": 2}]}))
        .await
        .json()
        .await
        .unwrap();
    let rejected = target.settled(short["id"].as_str().unwrap()).await;
    assert_eq!(rejected["status"], "rejected");
    assert!(
        rejected["reason"].as_str().unwrap().contains(&a),
        "{rejected}"
    );
    assert_eq!(target.stock(&a).await["reserved"], 2);
    assert_eq!(target.stock(&b).await["reserved"], 3);

    let listed = target
        .get_json(format!(
            "{}/v1/orders?customerId={customer}&status=confirmed",
            target.orders
        ))
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    target.stop().await;
}

#[tokio::test]
async fn concurrent_orders_for_the_last_unit_never_oversell() {
    let target = Target::get().await;
    let sku = target.unique("LAST");
    target.product(&sku, "9.99", 1).await;
    let responses = futures::future::join_all((0..12).map(|n| {
        target.place(json!({"customerId": target.unique(&format!("c{}", n % 4)),
            "lines": [{"sku": sku, "quantity": 1}]}))
    }))
    .await;
    let mut confirmed = 0;
    for response in responses {
        assert_eq!(response.status(), 202);
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        match target.settled(&id).await["status"].as_str().unwrap() {
            "confirmed" => confirmed += 1,
            "rejected" => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(confirmed, 1);
    assert_eq!(
        target.stock(&sku).await,
        json!({"sku": sku, "onHand": 1, "reserved": 1, "available": 0})
    );
    target.stop().await;
}

#[tokio::test]
async fn an_uploaded_feed_reaches_the_catalog() {
    let target = Target::get().await;
    let sku = target.unique("FEED");
    let feed = format!("sku,name,category,price,currency,onHand\n{sku},Fed,feeds,4.20,EUR,7\n");
    let uploaded = target
        .send(
            target
                .http
                .post(format!("{}/v1/imports?name=feed.csv", target.sync))
                .header("content-type", "text/csv")
                .body(feed),
        )
        .await;
    assert_eq!(uploaded.status(), 202);
    let job: Value = uploaded.json().await.unwrap();
    let url = format!("{}/v1/imports/{}", target.sync, job["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let job = target.get_json(url.clone()).await;
        if job["state"] == "completed" || job["state"] == "failed" {
            break job;
        }
        assert!(Instant::now() < deadline, "the import did not end: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(finished["created"], 1);
    let product = target
        .get_json(format!("{}/v2/products/{sku}", target.catalog))
        .await;
    assert_eq!(product["price"]["amount"], "4.20");
    assert_eq!(target.stock(&sku).await["onHand"], 7);
    target.stop().await;
}

#[tokio::test]
async fn webhook_subscriptions_show_their_secret_once_and_refuse_unknown_event_types() {
    let target = Target::get().await;
    let url = format!("{}/v1/subscriptions", target.notifications);
    let refused = target
        .send(
            target
                .http
                .post(&url)
                .json(&json!({"url": "https://example.com/hook", "eventTypes": ["billing.*"]})),
        )
        .await;
    assert_eq!(refused.status(), 422);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "eventTypes");
    if target.local {
        // A receiver on this machine (local targets allow loopback endpoints).
        let created = target
            .send(
                target
                    .http
                    .post(&url)
                    .json(&json!({"url": "http://127.0.0.1:9/hook", "eventTypes": ["orders.*"]})),
            )
            .await;
        assert_eq!(created.status(), 201);
        let subscription: Value = created.json().await.unwrap();
        assert!(
            subscription["secret"]
                .as_str()
                .unwrap()
                .starts_with("whsec_")
        );
        let id = subscription["id"].as_str().unwrap();
        let shown = target.get_json(format!("{url}/{id}")).await;
        assert!(shown.get("secret").is_none());
        let deleted = target.send(target.http.delete(format!("{url}/{id}"))).await;
        assert_eq!(deleted.status(), 204);
    }
    let unauthorized = target.http.get(&url).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    target.stop().await;
}
