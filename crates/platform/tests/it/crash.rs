//! `kill -9` of the whole platform process mid-saga, then a restart on the same data: no
//! acknowledged order is lost, none is confirmed twice, and reserved stock matches the
//! confirmed orders exactly.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const ON_HAND: i64 = 20;

pub struct Up {
    pub child: Child,
    pub catalog: String,
    pub orders: String,
    pub notifications: String,
}

/// `platform up` as its own process on `data`, with `extra` environment variables; ready
/// when it returns.
pub async fn up(data: &std::path::Path, extra: &[(&str, String)]) -> Up {
    let (catalog_port, orders_port, notifications_port) = (
        common::testing::free_port().unwrap(),
        common::testing::free_port().unwrap(),
        common::testing::free_port().unwrap(),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_platform"))
        .args(["up", "--data-dir"])
        .arg(data)
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .env("CATALOG__HTTP__PORT", catalog_port.to_string())
        .env("ORDERS__HTTP__PORT", orders_port.to_string())
        .env("NOTIFICATIONS__HTTP__PORT", notifications_port.to_string())
        .env("SYNC__HTTP__PORT", "0")
        .env("PLATFORM__AUTH__HS256_SECRET", SECRET)
        .env("PLATFORM__RATE_LIMIT__ENABLED", "false")
        .env("PLATFORM__BUS__POLL_INTERVAL_MS", "50")
        // Messages locked by the killed process come back when their lock expires.
        .env("PLATFORM__BUS__LOCK_SECONDS", "3")
        .env("PLATFORM__BUS__RETRY_BACKOFF_MS", "20,50")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = Up {
        child,
        catalog: format!("http://127.0.0.1:{catalog_port}"),
        orders: format!("http://127.0.0.1:{orders_port}"),
        notifications: format!("http://127.0.0.1:{notifications_port}"),
    };
    let client = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(60), || {
        let (catalog, orders, notifications) = (
            client.get(format!("{}/health/ready", up.catalog)).send(),
            client.get(format!("{}/health/ready", up.orders)).send(),
            client
                .get(format!("{}/health/ready", up.notifications))
                .send(),
        );
        async move {
            catalog.await.is_ok_and(|r| r.status() == 200)
                && orders.await.is_ok_and(|r| r.status() == 200)
                && notifications.await.is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(ready, "platform up did not become ready");
    up
}

pub async fn all_orders(client: &reqwest::Client, orders_url: &str, token: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let url = match &continuation {
            // Continuation tokens are base64url: safe in a query string as they are.
            Some(next) => format!("{orders_url}/v1/orders?limit=100&continuation={next}"),
            None => format!("{orders_url}/v1/orders?limit=100"),
        };
        let page: Value = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["continuation"].as_str() {
            Some(next) => continuation = Some(next.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn no_order_is_lost_or_confirmed_twice_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let token = token(&common::config::Settings::defaults());
    let client = reqwest::Client::new();
    let mut first = up(dir.path(), &[]).await;
    let skus = ["K-A", "K-B", "K-C"];
    for sku in skus {
        let created = client
            .post(format!("{}/v2/products", first.catalog))
            .bearer_auth(&token)
            .json(&json!({"sku": sku, "name": sku, "category": "k", "price": {"amount": "1.00", "currency": "EUR"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let counted = client
            .put(format!("{}/v2/products/{sku}/stock", first.catalog))
            .bearer_auth(&token)
            .json(&json!({"onHand": ON_HAND}))
            .send()
            .await
            .unwrap();
        assert_eq!(counted.status(), 200);
    }

    // Clients keep placing orders; the process is killed while they do.
    let placing = {
        let (client, url, token) = (client.clone(), first.orders.clone(), token.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..400 {
                let lines = json!([{"sku": skus[n % 3], "quantity": 1 + n % 2}, {"sku": skus[(n + 1) % 3], "quantity": 1}]);
                let sent = client
                    .post(format!("{url}/v1/orders"))
                    .bearer_auth(&token)
                    .json(&json!({"customerId": format!("cust-{}", n % 7), "lines": lines}))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 202 => {
                        acknowledged.push(
                            response.json::<Value>().await.unwrap()["id"]
                                .as_str()
                                .unwrap()
                                .to_owned(),
                        );
                    }
                    _ => break,
                }
            }
            acknowledged
        })
    };
    let (probe, orders_url, probe_token) = (client.clone(), first.orders.clone(), token.clone());
    let enough = eventually(Duration::from_secs(60), || {
        let request = probe
            .get(format!("{orders_url}/v1/orders?status=confirmed&limit=15"))
            .bearer_auth(&probe_token)
            .send();
        async move {
            match request.await {
                Ok(response) => response.json::<Value>().await.is_ok_and(|page| {
                    page["items"]
                        .as_array()
                        .is_some_and(|items| items.len() >= 15)
                }),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(enough, "the saga did not get going");
    first.child.kill().unwrap(); // SIGKILL: no clean shutdown
    first.child.wait().unwrap();
    let acknowledged = placing.await.unwrap();
    assert!(acknowledged.len() >= 15);

    let mut second = up(dir.path(), &[]).await;
    let settled = eventually(Duration::from_secs(120), || {
        let (client, url, token) = (client.clone(), second.orders.clone(), token.clone());
        async move {
            all_orders(&client, &url, &token)
                .await
                .iter()
                .all(|order| order["status"] != "pending")
        }
    })
    .await;
    assert!(settled, "orders stayed pending after the restart");

    let orders = all_orders(&client, &second.orders, &token).await;
    let known: std::collections::BTreeSet<&str> =
        orders.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(known.len(), orders.len(), "an order is listed twice");
    for id in &acknowledged {
        assert!(
            known.contains(id.as_str()),
            "acknowledged order {id} was lost"
        );
    }
    let mut expected: BTreeMap<String, i64> = skus.iter().map(|sku| (sku.to_string(), 0)).collect();
    for order in orders.iter().filter(|o| o["status"] == "confirmed") {
        for line in order["lines"].as_array().unwrap() {
            *expected.get_mut(line["sku"].as_str().unwrap()).unwrap() +=
                line["quantity"].as_i64().unwrap();
        }
    }
    for sku in skus {
        let stock: Value = client
            .get(format!("{}/v2/products/{sku}/stock", second.catalog))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            stock["reserved"].as_i64().unwrap(),
            expected[sku],
            "{sku}: reserved stock does not match confirmed orders"
        );
        assert!(stock["available"].as_i64().unwrap() >= 0);
    }
    // Where demand exceeded stock, someone was turned away.
    let mut demand: BTreeMap<&str, i64> = BTreeMap::new();
    for order in &orders {
        for line in order["lines"].as_array().unwrap() {
            *demand.entry(line["sku"].as_str().unwrap()).or_default() +=
                line["quantity"].as_i64().unwrap();
        }
    }
    if demand.values().any(|wanted| *wanted > ON_HAND) {
        assert!(
            orders.iter().any(|o| o["status"] == "rejected"),
            "demand exceeded stock, yet nothing was rejected"
        );
    }
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}
