//! `POST /v2/products:batch`: bulk upsert with each item's outcome.

use serde_json::{Value, json};

use crate::helpers::{TestApp, product_v2};

fn item(sku: &str, amount: &str, on_hand: Option<i64>) -> Value {
    let mut item = product_v2(sku, "feed", amount);
    if let Some(on_hand) = on_hand {
        item["onHand"] = json!(on_hand);
    }
    item
}

async fn send(app: &TestApp, items: Vec<Value>) -> Value {
    let response = app
        .post("/v2/products:batch", json!({ "items": items }))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn statuses(result: &Value) -> Vec<&str> {
    result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn each_item_is_created_updated_unchanged_or_refused_on_its_own() {
    let app = TestApp::spawn().await;
    app.post("/v2/products", product_v2("B-0", "feed", "1.00"))
        .await;
    let first = send(
        &app,
        vec![
            item("B-0", "1.00", None),
            item("B-1", "2.00", Some(5)),
            json!({"sku": "B-2", "name": "", "category": "feed",
                   "price": {"amount": "1.005", "currency": "EUR"}}),
            item("B-1", "3.00", None),
            item("bad/sku", "1.00", None),
            item("B-3", "1.00", Some(-1)),
            item("B-4", "4.00", Some(0)),
        ],
    )
    .await;
    assert_eq!(
        statuses(&first),
        [
            "unchanged",
            "created",
            "failed",
            "failed",
            "failed",
            "failed",
            "created"
        ]
    );
    assert_eq!(
        (
            &first["created"],
            &first["updated"],
            &first["unchanged"],
            &first["failed"]
        ),
        (&json!(2), &json!(0), &json!(1), &json!(4))
    );
    let refused = &first["items"][2];
    assert_eq!(refused["sku"], "B-2");
    let fields: Vec<&str> = refused["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "price.amount"]);
    assert_eq!(first["items"][3]["errors"][0]["field"], "sku");
    assert_eq!(first["items"][5]["errors"][0]["field"], "onHand");
    assert_eq!(first["items"][6]["index"], 6);

    // Applied for real: the product, its stock.
    let product: Value = app.get("/v2/products/B-1").await.json().await.unwrap();
    assert_eq!(product["price"]["amount"], "2.00");
    let stock: Value = app
        .get("/v2/products/B-1/stock")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stock["onHand"], 5);

    // The same batch again changes nothing; a new price or count is an update.
    let again = send(
        &app,
        vec![item("B-1", "2.00", Some(5)), item("B-4", "4.00", Some(0))],
    )
    .await;
    assert_eq!(statuses(&again), ["unchanged", "unchanged"]);
    let changed = send(
        &app,
        vec![item("B-1", "2.50", Some(5)), item("B-4", "4.00", Some(7))],
    )
    .await;
    assert_eq!(statuses(&changed), ["updated", "updated"]);
    let stock: Value = app
        .get("/v2/products/B-4/stock")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stock["onHand"], 7);
    let product: Value = app.get("/v2/products/B-1").await.json().await.unwrap();
    assert_eq!(product["price"]["amount"], "2.50");
    // A deleted product comes back as created.
    let deleted = app
        .request(reqwest::Method::DELETE, "/v2/products/B-0")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let back = send(&app, vec![item("B-0", "1.00", None)]).await;
    assert_eq!(statuses(&back), ["created"]);
    // And the list sees what the batches wrote.
    let list = app.list("/v2/products?category=feed").await;
    let skus: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["B-0", "B-1", "B-4"]);
}

#[tokio::test]
async fn a_batch_is_bounded_and_must_hold_items() {
    let app = TestApp::spawn().await;
    for body in [json!({}), json!({"items": []}), json!({"items": [1]})] {
        let response = app.post("/v2/products:batch", body).await;
        assert_eq!(response.status(), 422);
    }
    let too_many: Vec<Value> = (0..1001)
        .map(|n| item(&format!("M-{n}"), "1.00", None))
        .collect();
    let response = app
        .post("/v2/products:batch", json!({ "items": too_many }))
        .await;
    assert_eq!(response.status(), 422);
    let reader = app.token("catalog.read");
    let response = app
        .http
        .post(format!("{}/v2/products:batch", app.url))
        .bearer_auth(reader)
        .json(&json!({"items": [item("R-1", "1.00", None)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}
