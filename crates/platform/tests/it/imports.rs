//! Product-feed imports through sync into the catalog: uploads, the watched folder, bad rows
//! by line, re-imports that change nothing, and a `kill -9` in the middle of an import.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// Settings that make imports quick to observe: small batches, a folder looked at often.
pub(crate) fn import_overrides() -> Vec<(&'static str, String)> {
    vec![
        ("imports.batch_size", "100".to_owned()),
        ("imports.poll_interval_ms", "50".to_owned()),
        ("imports.settle_ms", "0".to_owned()),
    ]
}

pub(crate) fn feed(rows: usize, currency: &str) -> String {
    let mut text = String::from("sku,name,description,category,price,currency,onHand\n");
    for n in 0..rows {
        text.push_str(&format!(
            "IMP-{n},Product {n},\"Made, with care\",imports,{}.50,{currency},{}\n",
            n % 90 + 1,
            n % 7
        ));
    }
    text
}

pub(crate) async fn upload(
    platform: &Platform,
    name: &str,
    content_type: &str,
    body: String,
) -> Value {
    let response = platform
        .http
        .post(format!("{}/v1/imports?name={name}", platform.sync_url))
        .bearer_auth(&platform.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert!(response.headers().get("location").is_some());
    response.json().await.unwrap()
}

async fn job(http: &reqwest::Client, sync_url: &str, token: &str, id: &str) -> Value {
    http.get(format!("{sync_url}/v1/imports/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The import once it has ended.
async fn finished(http: &reqwest::Client, sync_url: &str, token: &str, id: &str) -> Value {
    let ended = eventually(Duration::from_secs(60), || async {
        let state = job(http, sync_url, token, id).await["state"].clone();
        state == "completed" || state == "failed"
    })
    .await;
    assert!(ended, "import {id} did not end");
    job(http, sync_url, token, id).await
}

#[tokio::test]
async fn a_feed_reaches_the_catalog_and_bad_rows_are_reported_by_line() {
    let platform = Platform::launch(&[], &import_overrides(), |_| {}, None).await;
    let mut text = feed(250, "EUR");
    text.push_str(",No SKU,,imports,1.00,EUR,1\n");
    text.push_str("BAD-PRICE,Too precise,,imports,1.005,EUR,1\n");
    text.push_str("BAD-COUNT,Not a count,,imports,1.00,EUR,lots\n");
    let queued = upload(&platform, "feed.csv", "text/csv", text.clone()).await;
    assert_eq!(queued["state"], "queued");
    assert_eq!(queued["fileName"], "feed.csv");
    let id = queued["id"].as_str().unwrap();
    let done = finished(&platform.http, &platform.sync_url, &platform.token, id).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["total"], 253);
    assert_eq!(done["processed"], 253);
    assert_eq!(done["created"], 250);
    assert_eq!(done["failed"], 3);
    let errors: Vec<(u64, &str)> = done["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(errors, [(252, "sku"), (253, "price"), (254, "onHand")]);

    // In the catalog, with the stock counted.
    let product = platform
        .get_json(format!("{}/v2/products/IMP-42", platform.catalog_url))
        .await;
    assert_eq!(product["price"]["amount"], "43.50");
    assert_eq!(product["description"], "Made, with care");
    let stock = platform
        .get_json(format!("{}/v2/products/IMP-42/stock", platform.catalog_url))
        .await;
    assert_eq!(stock["onHand"], 0);

    // The same feed again changes nothing, and says so.
    let again = upload(&platform, "feed.csv", "text/csv", text).await;
    let again = finished(
        &platform.http,
        &platform.sync_url,
        &platform.token,
        again["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        (&again["unchanged"], &again["created"], &again["updated"]),
        (&250.into(), &0.into(), &0.into())
    );
    // Every row of both imports, by outcome, in sync's metrics; the catalog's store reads.
    let figures = crate::metrics::scrape(&platform, &platform.sync_url).await;
    let rows = |outcome: &str| {
        crate::metrics::total(
            &figures,
            "platform_import_rows_total",
            &[&format!(r#"platform_outcome="{outcome}""#)],
        )
    };
    assert_eq!(
        (rows("created"), rows("unchanged"), rows("failed")),
        (250.0, 250.0, 6.0),
        "{figures}"
    );
    let catalog = crate::metrics::scrape(&platform, &platform.catalog_url).await;
    assert!(
        crate::metrics::total(
            &catalog,
            "db_client_operation_duration_seconds_count",
            &[
                r#"db_system_name="sqlite""#,
                r#"db_collection_name="products""#,
                r#"db_operation_name="read""#
            ]
        ) >= 1.0,
        "{catalog}"
    );
    assert!(
        catalog.contains("# TYPE platform_view_lag_seconds gauge"),
        "{catalog}"
    );

    // Newest first.
    let list = platform
        .get_json(format!("{}/v1/imports?limit=1", platform.sync_url))
        .await;
    assert_eq!(list["items"][0]["id"], again["id"]);
    assert!(list["continuation"].is_string());
    platform.stop().await;
}

#[tokio::test]
async fn dropped_feeds_are_imported_and_what_is_no_feed_fails_with_its_reason() {
    let platform = Platform::launch(&["catalog", "sync"], &import_overrides(), |_| {}, None).await;
    let incoming = platform.dir.path().join("sync-files").join("incoming");
    std::fs::write(
        incoming.join("pim.jsonl"),
        "{\"sku\":\"J-1\",\"name\":\"One\",\"category\":\"jl\",\"price\":\"2.00\",\"currency\":\"EUR\",\"onHand\":4}\n\
         {\"sku\":\"J-2\",\"name\":\"Two\",\"category\":\"jl\",\"price\":3,\"currency\":\"JPY\"}\n",
    )
    .unwrap();
    std::fs::write(incoming.join("notes.txt"), "hello").unwrap();
    std::fs::write(incoming.join("wrong.csv"), "id,title\n1,x\n").unwrap();
    let all_ended = eventually(Duration::from_secs(30), || async {
        let list = platform
            .get_json(format!("{}/v1/imports", platform.sync_url))
            .await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items.len() == 3
            && items
                .iter()
                .all(|i| i["state"] == "completed" || i["state"] == "failed")
    })
    .await;
    assert!(all_ended, "the dropped files were not all imported");
    let list = platform
        .get_json(format!("{}/v1/imports", platform.sync_url))
        .await;
    let by_name = |name: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["fileName"] == name)
            .cloned()
            .unwrap()
    };
    let jsonl = by_name("pim.jsonl");
    assert_eq!(
        (&jsonl["state"], &jsonl["created"], &jsonl["source"]),
        (&"completed".into(), &2.into(), &"folder".into())
    );
    assert!(
        by_name("notes.txt")["failure"]
            .as_str()
            .unwrap()
            .contains(".csv")
    );
    assert!(
        by_name("wrong.csv")["failure"]
            .as_str()
            .unwrap()
            .contains("no sku column")
    );
    // Taken files leave the watched folder.
    assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 0);
    let yen = platform
        .get_json(format!("{}/v2/products/J-2", platform.catalog_url))
        .await;
    assert_eq!(
        yen["price"],
        serde_json::json!({"amount": "3", "currency": "JPY"})
    );
    platform.stop().await;
}

#[tokio::test]
async fn uploads_that_are_not_feeds_are_refused() {
    let platform = Platform::launch(&["catalog", "sync"], &import_overrides(), |_| {}, None).await;
    let refused = platform
        .http
        .post(format!("{}/v1/imports", platform.sync_url))
        .bearer_auth(&platform.token)
        .header("content-type", "application/pdf")
        .body("%PDF")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 415);
    let reader = platform
        .http
        .post(format!("{}/v1/imports", platform.sync_url))
        .bearer_auth(
            common::auth::mint_dev_token(
                &secrecy::SecretString::from(SECRET.to_owned()),
                &platform.settings.auth,
                "e2e",
                "catalog.read",
                60,
            )
            .unwrap(),
        )
        .header("content-type", "text/csv")
        .body("sku\nA\n")
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 403);
    let unknown = platform
        .http
        .get(format!("{}/v1/imports/not-an-id", platform.sync_url))
        .bearer_auth(&platform.token)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    platform.stop().await;
}

/// `platform up` as a child process, with small import batches.
fn up(data: &std::path::Path, catalog_port: u16, sync_port: u16) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_platform"))
        .args(["up", "--only", "catalog,sync", "--data-dir"])
        .arg(data)
        .env("CATALOG__HTTP__PORT", catalog_port.to_string())
        .env("SYNC__HTTP__PORT", sync_port.to_string())
        .env("SYNC__IMPORTS__BATCH_SIZE", "50")
        .env("SYNC__IMPORTS__BATCHES_IN_FLIGHT", "2")
        .env("PLATFORM__AUTH__HS256_SECRET", SECRET)
        .env("PLATFORM__RATE_LIMIT__ENABLED", "false")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_killed_import_resumes_from_its_checkpoint_and_counts_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog_port, sync_port) = (
        common::testing::free_port().unwrap(),
        common::testing::free_port().unwrap(),
    );
    let sync_url = format!("http://127.0.0.1:{sync_port}");
    let catalog_url = format!("http://127.0.0.1:{catalog_port}");
    let http = reqwest::Client::new();
    let settings = common::config::Settings::defaults();
    let token = token(&settings);
    let ready = |url: String| {
        let http = http.clone();
        async move {
            eventually(Duration::from_secs(60), || {
                let request = http.get(format!("{url}/health/ready")).send();
                async move { request.await.is_ok_and(|r| r.status() == 200) }
            })
            .await
        }
    };
    let mut child = up(dir.path(), catalog_port, sync_port);
    assert!(ready(sync_url.clone()).await && ready(catalog_url.clone()).await);
    let rows = 3_000;
    let queued: Value = http
        .post(format!("{sync_url}/v1/imports?name=big.csv"))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(feed(rows, "EUR"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = queued["id"].as_str().unwrap().to_owned();
    let underway = eventually(Duration::from_secs(60), || async {
        job(&http, &sync_url, &token, &id).await["processed"]
            .as_u64()
            .is_some_and(|n| n >= 300)
    })
    .await;
    assert!(underway, "the import did not get under way");
    child.kill().unwrap();
    child.wait().unwrap();
    let interrupted_at = {
        let mut child = up(dir.path(), catalog_port, sync_port);
        assert!(ready(sync_url.clone()).await);
        let resumed = finished(&http, &sync_url, &token, &id).await;
        let last = http
            .get(format!("{catalog_url}/v2/products/IMP-{}", rows - 1))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(last.status(), 200);
        child.kill().unwrap();
        child.wait().unwrap();
        resumed
    };
    let done = interrupted_at;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["total"], rows);
    assert_eq!(
        done["processed"], rows,
        "a row was counted twice or lost: {done}"
    );
    // The batches in flight at the kill (two of 50 rows) may have reached the catalog
    // before their checkpoint: sent again, their rows are unchanged (or updated, where the
    // kill fell between a product and its stock count), never doubled.
    let created = done["created"].as_u64().unwrap();
    let resent = done["unchanged"].as_u64().unwrap() + done["updated"].as_u64().unwrap();
    assert_eq!(created + resent, rows as u64, "{done}");
    assert!(
        resent <= 100,
        "more than the batches in flight were sent again: {done}"
    );
    assert_eq!(done["failed"], 0);
}

/// Sync keeping its feeds in an Azure Blob Storage container (on Azurite): a feed dropped
/// under `incoming/` and an upload both reach the catalog, and the dropped blob is taken.
#[tokio::test]
async fn feeds_in_a_blob_container_are_imported() {
    use common::files::FileStore;
    use common::files::blob::{BlobCredentialKind, BlobFiles, BlobSettings};
    use futures::StreamExt;

    let azurite = common::testing::azurite::azurite();
    let blob = BlobSettings {
        endpoint: azurite.endpoint.clone(),
        container: format!("feeds-{}", std::process::id()),
        credential: BlobCredentialKind::Sas,
        sas: Some(common::testing::azurite::account_sas().into()),
    };
    let mut overrides = import_overrides();
    overrides.extend([
        ("files.kind", "blob".to_owned()),
        ("files.blob.endpoint", blob.endpoint.clone()),
        ("files.blob.container", blob.container.clone()),
        ("files.blob.credential", "sas".to_owned()),
        ("files.blob.sas", common::testing::azurite::account_sas()),
    ]);
    let platform = Platform::launch(&["catalog", "sync"], &overrides, |_| {}, None).await;
    let container = BlobFiles::connect(&blob).await.unwrap();
    let dropped = bytes::Bytes::from(feed(120, "EUR"));
    container
        .put(
            "incoming/erp.csv",
            futures::stream::iter([Ok(dropped)]).boxed(),
        )
        .await
        .unwrap();
    let uploaded = upload(&platform, "shop.csv", "text/csv", feed(3, "USD")).await;
    let uploaded = finished(
        &platform.http,
        &platform.sync_url,
        &platform.token,
        uploaded["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(uploaded["state"], "completed", "{uploaded}");

    let taken = eventually(Duration::from_secs(30), || async {
        let list = platform
            .get_json(format!("{}/v1/imports", platform.sync_url))
            .await;
        list["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i["fileName"] == "erp.csv" && i["state"] == "completed")
        })
    })
    .await;
    assert!(taken, "the dropped blob was not imported");
    let list = platform
        .get_json(format!("{}/v1/imports", platform.sync_url))
        .await;
    let erp = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["fileName"] == "erp.csv")
        .cloned()
        .unwrap();
    assert_eq!((&erp["total"], &erp["failed"]), (&120.into(), &0.into()));
    assert_eq!(container.list("incoming/").await.unwrap(), []);
    let product = platform
        .get_json(format!("{}/v2/products/IMP-119", platform.catalog_url))
        .await;
    assert_eq!(product["price"]["amount"], "30.50");
    // Feeds are deleted once their import ends.
    let cleaned = eventually(Duration::from_secs(10), || async {
        container.list("uploads/").await.unwrap().is_empty()
    })
    .await;
    assert!(cleaned, "the imported feeds were kept");
    platform.stop().await;
}

/// Batches go to the catalog several at a time; a SKU that comes again in a later batch
/// still ends with its last row, and every row is counted once.
#[tokio::test]
async fn with_batches_in_flight_the_last_row_of_a_sku_wins() {
    let mut overrides = import_overrides();
    overrides.retain(|(key, _)| *key != "imports.batch_size");
    overrides.extend([
        ("imports.batch_size", "2".to_owned()),
        ("imports.batches_in_flight", "4".to_owned()),
    ]);
    let platform = Platform::launch(&["catalog", "sync"], &overrides, |_| {}, None).await;
    let mut text = String::from("sku,name,category,price,currency,onHand\n");
    for round in 1..=5 {
        text.push_str(&format!(
            "RACE-1,Round {round},race,{round}.00,EUR,{round}\n"
        ));
        text.push_str(&format!("RACE-{},Other,race,1.00,EUR,1\n", round + 1));
    }
    let queued = upload(&platform, "race.csv", "text/csv", text).await;
    let done = finished(
        &platform.http,
        &platform.sync_url,
        &platform.token,
        queued["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        (&done["processed"], &done["failed"]),
        (&10.into(), &0.into())
    );
    assert_eq!(
        (&done["created"], &done["updated"]),
        (&6.into(), &4.into()),
        "{done}"
    );
    let product = platform
        .get_json(format!("{}/v2/products/RACE-1", platform.catalog_url))
        .await;
    assert_eq!(product["name"], "Round 5");
    let stock = platform
        .get_json(format!("{}/v2/products/RACE-1/stock", platform.catalog_url))
        .await;
    assert_eq!(stock["onHand"], 5);
    platform.stop().await;
}
