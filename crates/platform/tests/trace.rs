//! One `traceparent` links the order request, the catalog call and every event handler
//! of the saga in the exported spans. Its own test binary: it installs the process-wide
//! tracing subscriber with an in-memory exporter.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "it/helpers.rs"]
mod helpers;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use helpers::{Platform, eventually};

#[tokio::test]
async fn one_traceparent_links_request_catalog_call_and_handlers() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("e2e")))
        .try_init()
        .unwrap();

    let platform = Platform::start().await;
    platform.product("T-1", "2.00", 5).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let placed: serde_json::Value = platform
        .http
        .post(format!("{}/v1/orders", platform.orders_url))
        .bearer_auth(&platform.token)
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&json!({"customerId": "traced", "lines": [{"sku": "T-1", "quantity": 1}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order = platform.settled(placed["id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "confirmed");

    let expected = [
        "POST /v1/orders",
        "catalog.price",
        "GET /v2/products/{sku}",
        "orders.order.placed.v1 process",
        "catalog.stock.reserved.v1 process",
    ];
    let names_in_trace = || {
        exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|span| span.span_context.trace_id().to_string() == trace_id)
            .map(|span| span.name.to_string())
            .collect::<Vec<_>>()
    };
    let linked = eventually(Duration::from_secs(30), || {
        let names = names_in_trace();
        async move { expected.iter().all(|name| names.iter().any(|n| n == name)) }
    })
    .await;
    assert!(linked, "spans in the trace: {:?}", names_in_trace());
    platform.stop().await;
}
