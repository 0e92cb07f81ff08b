//! Self-healing: a peer that keeps failing has its circuit opened (calls fail at once, the
//! peer is left alone), readiness and metrics say so, and the first call after the open
//! period probes and closes it once the peer is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::testing::eventually;
use serde_json::{Value, json};

use crate::helpers::Platform;

/// A catalog stand-in that fails with 500 while `failing`, and counts the calls it gets.
struct FlakyCatalog {
    url: String,
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    server: actix_web::dev::ServerHandle,
}

fn flaky_catalog() -> FlakyCatalog {
    let failing = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let (fail, count) = (failing.clone(), calls.clone());
    let (url, handle) = crate::helpers::serve_stub(move |config| {
        let (fail, count) = (fail.clone(), count.clone());
        config.default_service(actix_web::web::to(move || {
            let (fail, count) = (fail.clone(), count.clone());
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                if fail.load(Ordering::SeqCst) {
                    actix_web::HttpResponse::InternalServerError().finish()
                } else {
                    actix_web::HttpResponse::Ok()
                        .json(json!({"price": {"amount": "2.00", "currency": "EUR"}}))
                }
            }
        }));
    });
    FlakyCatalog {
        url,
        failing,
        calls,
        server: handle,
    }
}

#[tokio::test]
async fn a_failing_peer_opens_its_circuit_and_a_probe_closes_it_when_it_is_back() {
    let catalog = flaky_catalog();
    let platform = Platform::launch(
        &["orders"],
        &[
            ("catalog.url", catalog.url.clone()),
            ("catalog.attempts", "1".to_owned()),
            ("outbound.breaker_failures", "3".to_owned()),
            ("outbound.breaker_open_ms", "4000".to_owned()),
        ],
        |_| {},
        None,
    )
    .await;
    let lines = || json!([{"sku": "FLAKY-1", "quantity": 1}]);
    for _ in 0..3 {
        let response = platform.place("c-flaky", lines(), None).await;
        assert_eq!(response.status(), 424, "the catalog answers 500");
    }
    assert_eq!(catalog.calls.load(Ordering::SeqCst), 3);

    // Open: refused at once, the catalog left alone, and the operator told.
    let response = platform.place("c-flaky", lines(), None).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(
        catalog.calls.load(Ordering::SeqCst),
        3,
        "an open circuit called the peer"
    );
    let ready = platform
        .get_json(format!("{}/health/ready", platform.orders_url))
        .await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["breakers"][&catalog.url]["state"], "open", "{ready}");
    let figures = crate::metrics::scrape(&platform, &platform.orders_url).await;
    assert_eq!(
        crate::metrics::total(
            &figures,
            "platform_outbound_breaker_state",
            &[&format!(r#"server_address="{}""#, catalog.url)]
        ),
        2.0,
        "{figures}"
    );

    // Back: after the open period one call probes; it succeeds and the circuit closes.
    catalog.failing.store(false, Ordering::SeqCst);
    let accepted = eventually(Duration::from_secs(30), || async {
        platform.place("c-flaky", lines(), None).await.status() == 202
    })
    .await;
    assert!(
        accepted,
        "no order was accepted after the catalog came back"
    );
    let ready: Value = platform
        .get_json(format!("{}/health/ready", platform.orders_url))
        .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(
        ready["breakers"][&catalog.url]["state"], "closed",
        "{ready}"
    );
    assert_eq!(ready["breakers"][&catalog.url]["timesOpened"], 1, "{ready}");
    platform.stop().await;
    catalog.server.stop(true).await;
}

#[tokio::test]
async fn a_store_file_taken_away_and_put_back_heals_without_a_restart() {
    let platform = Platform::launch(&["catalog"], &[], |_| {}, None).await;
    platform.product("HEAL-1", "1.00", 10).await;
    let file = platform.dir.path().join("catalog.db");
    let away = platform.dir.path().join("catalog.db.away");
    std::fs::rename(&file, &away).unwrap();

    // Taken away: writes and reads are refused (nothing goes to a file nobody will find),
    // and readiness says why.
    let catalog_readiness = || async {
        let ready = platform
            .http
            .get(format!("{}/health/ready", platform.catalog_url))
            .send()
            .await
            .unwrap();
        let status = ready.status();
        (status, ready.json::<Value>().await.unwrap())
    };
    let (status, said) = catalog_readiness().await;
    assert_eq!(status, 503);
    assert!(
        said["detail"]
            .as_str()
            .unwrap()
            .starts_with("store is not ready"),
        "{said}"
    );
    let write = platform
        .http
        .put(format!("{}/v2/products/HEAL-1/stock", platform.catalog_url))
        .bearer_auth(&platform.token)
        .json(&json!({"onHand": 11}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 503);
    assert!(write.headers().get("retry-after").is_some());

    // An order event arrives meanwhile: its handler fails, the worker backs off and retries.
    let bus = common::runtime::adapters::open_bus(&platform.settings).unwrap();
    let placed = common::bus::CloudEvent::new(
        "tests",
        <common::events::OrderPlaced as common::events::EventType>::TYPE,
        "o-heal",
        json!({"orderId": "o-heal", "customerId": "c-heal", "lines": [{"sku": "HEAL-1", "quantity": 2}]}),
    );
    bus.publish(
        common::bus::topics::ORDERS,
        common::bus::Message::new(placed),
    )
    .await
    .unwrap();
    let retried = eventually(Duration::from_secs(30), || async {
        let figures = crate::metrics::scrape(&platform, &platform.catalog_url).await;
        crate::metrics::total(
            &figures,
            "platform_messaging_handler_outcomes_total",
            &[r#"platform_outcome="retried""#],
        ) >= 1.0
    })
    .await;
    assert!(retried, "the handler did not fail while the store was away");

    // Put back: everything resumes by itself; the event is handled, nothing is lost.
    std::fs::rename(&away, &file).unwrap();
    let reserved = eventually(Duration::from_secs(30), || async {
        let stock = platform.stock("HEAL-1").await;
        stock["reserved"] == 2 && stock["onHand"] == 10
    })
    .await;
    assert!(reserved, "{}", platform.stock("HEAL-1").await);
    assert_eq!(catalog_readiness().await.0, 200);
    platform.count("HEAL-1", 12).await;
    assert!(
        bus.dead_letters(common::bus::topics::ORDERS, "catalog", 10)
            .await
            .unwrap()
            .is_empty(),
        "the event was dead-lettered instead of waiting"
    );
    platform.stop().await;
}
