//! The storefront's list (`GET /v2/products`), served from the `product-views` read model
//! that the change feeds of products and stock keep: it follows writes, filters and sorts
//! within a category's partition, says how fresh it is, can be rebuilt from scratch, and
//! converges after a kill -9 in the middle of its updates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::durability::start_binary;
use crate::helpers::*;

fn skus(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_list_follows_every_kind_of_write() {
    let app = TestApp::spawn().await;
    let started = Instant::now();
    assert_eq!(
        app.post("/v2/products", product_v2("V-1", "tools", "12.50"))
            .await
            .status(),
        201
    );
    // Visible without waiting on a poll: the write wakes the view's readers.
    let visible = common::testing::eventually(Duration::from_secs(10), || async {
        skus(
            &app.get("/v2/products?category=tools")
                .await
                .json()
                .await
                .unwrap(),
        ) == ["V-1"]
    })
    .await;
    assert!(visible);
    println!("write to view: {} ms", started.elapsed().as_millis());

    let page = app.list("/v2/products?category=tools").await;
    assert_eq!(page["items"][0]["available"], 0);
    assert_eq!(page["items"][0]["inStock"], false);
    assert_eq!(
        page["items"][0]["price"],
        json!({"amount": "12.50", "currency": "EUR"})
    );

    // Stock counted: availability follows.
    app.put("/v2/products/V-1/stock", json!({"onHand": 4}), None)
        .await;
    let page = app.list("/v2/products?category=tools&inStock=true").await;
    assert_eq!(page["items"][0]["available"], 4);

    // A new category: the product leaves the old one.
    let current = app.get("/v2/products/V-1").await;
    let tag = etag(&current);
    let moved = app
        .put(
            "/v2/products/V-1",
            product_v2("V-1", "garden", "12.50"),
            Some(&tag),
        )
        .await;
    assert_eq!(moved.status(), 200);
    assert!(skus(&app.list("/v2/products?category=tools").await).is_empty());
    let garden = app.list("/v2/products?category=garden").await;
    assert_eq!(skus(&garden), ["V-1"]);
    assert_eq!(
        garden["items"][0]["available"], 4,
        "stock kept across the move"
    );

    // Deleted: gone from the list, and the SKU can be created again.
    let deleted = app
        .request(reqwest::Method::DELETE, "/v2/products/V-1")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(skus(&app.list("/v2/products").await).is_empty());
    assert_eq!(app.get("/v2/products/V-1").await.status(), 404);
    assert_eq!(
        app.post("/v2/products", product_v2("V-1", "tools", "1.00"))
            .await
            .status(),
        201
    );
    assert_eq!(
        skus(&app.list("/v2/products?category=tools").await),
        ["V-1"]
    );
    let page = app.get("/v2/products").await;
    assert_eq!(page.headers()["view-lag-ms"], "0");
    assert!(page.headers().get("view-as-of").is_some());
}

#[tokio::test]
async fn the_list_filters_and_sorts_within_a_category() {
    let app = TestApp::spawn().await;
    for (sku, amount, on_hand) in [
        ("S-1", "5.00", 0),
        ("S-2", "19.99", 3),
        ("S-3", "7.50", 1),
        ("S-4", "12.00", 0),
    ] {
        app.post("/v2/products", product_v2(sku, "shop", amount))
            .await;
        app.put(
            &format!("/v2/products/{sku}/stock"),
            json!({"onHand": on_hand}),
            None,
        )
        .await;
    }
    app.post("/v2/products", product_v2("O-1", "other", "6.00"))
        .await;
    let shop = "/v2/products?category=shop";
    assert_eq!(skus(&app.list(shop).await), ["S-1", "S-2", "S-3", "S-4"]);
    assert_eq!(
        skus(&app.list(&format!("{shop}&sort=price")).await),
        ["S-1", "S-3", "S-4", "S-2"]
    );
    assert_eq!(
        skus(&app.list(&format!("{shop}&sort=-price")).await),
        ["S-2", "S-4", "S-3", "S-1"]
    );
    assert_eq!(
        skus(&app.list(&format!("{shop}&inStock=true&sort=-sku")).await),
        ["S-3", "S-2"]
    );
    assert_eq!(
        skus(
            &app.list(&format!("{shop}&minPrice=6&maxPrice=12.00&sort=price"))
                .await
        ),
        ["S-3", "S-4"]
    );
    // Pages of a sorted list follow on from each other.
    let first = app.list(&format!("{shop}&sort=price&limit=3")).await;
    let token = first["continuation"].as_str().unwrap();
    let rest = app
        .list(&format!("{shop}&sort=price&limit=3&continuation={token}"))
        .await;
    assert_eq!(skus(&rest), ["S-2"]);
    // Every category at once.
    assert_eq!(
        skus(&app.list("/v2/products?minPrice=6&maxPrice=6").await),
        ["O-1"]
    );
    // Bad filters are listed at once.
    let bad = problem(app.get("/v2/products?minPrice=abc&sort=colour").await, 422).await;
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["minPrice", "sort"]);
    problem(app.get("/v2/products?minPrice=10&maxPrice=2").await, 422).await;
    problem(app.get("/v2/products?inStock=maybe").await, 400).await;
}

/// Every page of `GET /v2/products` as (sku, available), once caught up.
async fn view_of(app: &TestApp) -> BTreeMap<String, i64> {
    let mut all = BTreeMap::new();
    let mut path = "/v2/products?limit=100".to_owned();
    loop {
        let page = app.list(&path).await;
        for item in page["items"].as_array().unwrap() {
            all.insert(
                item["sku"].as_str().unwrap().to_owned(),
                item["available"].as_i64().unwrap(),
            );
        }
        match page["continuation"].as_str() {
            Some(token) => path = format!("/v2/products?limit=100&continuation={token}"),
            None => return all,
        }
    }
}

#[tokio::test]
async fn the_view_is_rebuilt_from_scratch() {
    let app = TestApp::spawn().await;
    for n in 0..12 {
        let sku = format!("R-{n}");
        app.post(
            "/v2/products",
            product_v2(&sku, &format!("c{}", n % 3), "1.00"),
        )
        .await;
        app.put(
            &format!("/v2/products/{sku}/stock"),
            json!({"onHand": n}),
            None,
        )
        .await;
    }
    let before = view_of(&app).await;
    assert_eq!(before.len(), 12);
    // Damage the view behind the service's back: views lost, a stale one, a ghost.
    let store = common::runtime::adapters::open_store(
        &app.settings,
        "catalog",
        catalog::catalog::CONTAINERS,
    )
    .await
    .unwrap();
    for n in [0, 3, 6] {
        store
            .delete("product-views", "c0", &format!("R-{n}"), None)
            .await
            .unwrap();
    }
    let mut stale = store
        .read("product-views", "c1", "R-1")
        .await
        .unwrap()
        .unwrap();
    stale.body["available"] = json!(999);
    store
        .replace("product-views", "c1", "R-1", stale.body.clone(), None)
        .await
        .unwrap();
    let mut ghost = stale.body.clone();
    ghost["sku"] = json!("GHOST");
    store
        .create("product-views", "c1", "GHOST", ghost)
        .await
        .unwrap();
    assert_ne!(view_of(&app).await, before);

    let views = catalog::views::ProductViews::new(store, Default::default());
    let report = views.rebuild(|_| {}).await.unwrap();
    assert_eq!(report.views, 12);
    assert_eq!(view_of(&app).await, before);
}

#[tokio::test]
async fn the_view_converges_after_a_kill_9_mid_update() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_for(&test_settings(dir.path()), ALL);
    let client = reqwest::Client::new();
    let process = start_binary(dir.path(), common::testing::free_port().unwrap()).await;
    // Products and stock counts keep arriving while the process is killed.
    let writer = {
        let (client, url, token) = (client.clone(), process.url.clone(), token.clone());
        tokio::spawn(async move {
            let mut acknowledged = BTreeMap::new();
            for n in 0..10_000i64 {
                let sku = format!("K-{n}");
                let created = client
                    .post(format!("{url}/v2/products"))
                    .bearer_auth(&token)
                    .json(&product_v2(&sku, &format!("k{}", n % 4), "2.00"))
                    .send()
                    .await;
                if !created.is_ok_and(|r| r.status() == 201) {
                    break;
                }
                acknowledged.insert(sku.clone(), 0);
                let counted = client
                    .put(format!("{url}/v2/products/{sku}/stock"))
                    .bearer_auth(&token)
                    .json(&json!({"onHand": n % 7}))
                    .send()
                    .await;
                if !counted.is_ok_and(|r| r.status() == 200) {
                    break;
                }
                acknowledged.insert(sku, n % 7);
            }
            acknowledged
        })
    };
    let mut process = process;
    let some = common::testing::eventually(Duration::from_secs(30), || {
        let request = client
            .get(format!("{}/v2/products?limit=50", process.url))
            .bearer_auth(&token)
            .send();
        async move {
            match request.await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|p| p["items"].as_array().is_some_and(|items| items.len() >= 40)),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(some);
    process.child.kill().unwrap(); // SIGKILL, mid-stream
    process.child.wait().unwrap();
    let acknowledged = writer.await.unwrap();

    let mut restarted = start_binary(dir.path(), common::testing::free_port().unwrap()).await;
    let app_like = |path: String| {
        client
            .get(format!("{}{path}", restarted.url))
            .bearer_auth(&token)
            .send()
    };
    // A stock count in flight at the kill may have been stored or not: read the truth.
    let mut expected = BTreeMap::new();
    for sku in acknowledged.keys() {
        let stock: Value = app_like(format!("/v2/products/{sku}/stock"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        expected.insert(sku.clone(), stock["available"].as_i64().unwrap());
    }
    let converged = common::testing::eventually(Duration::from_secs(60), || async {
        let mut seen = BTreeMap::new();
        let mut path = "/v2/products?limit=100".to_owned();
        loop {
            let Ok(response) = app_like(path.clone()).await else {
                return false;
            };
            let page: Value = response.json().await.unwrap();
            for item in page["items"].as_array().unwrap() {
                seen.insert(
                    item["sku"].as_str().unwrap().to_owned(),
                    item["available"].as_i64().unwrap(),
                );
            }
            match page["continuation"].as_str() {
                Some(token) => path = format!("/v2/products?limit=100&continuation={token}"),
                None => break,
            }
        }
        // Every acknowledged product is there with its stock; a product whose create was
        // in flight may be there too.
        expected
            .iter()
            .all(|(sku, available)| seen.get(sku) == Some(available))
            && seen.len() <= expected.len() + 1
    })
    .await;
    assert!(converged, "the view did not converge after the restart");
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}
