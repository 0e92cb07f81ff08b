//! Metrics as an operator reads them: Prometheus text at `/metrics` (who may read it), and
//! the same figures pushed to an OTLP/HTTP receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use common::bus::topics;
use common::testing::eventually;
use serde_json::json;

use crate::helpers::Platform;

pub(crate) async fn scrape(platform: &Platform, url: &str) -> String {
    let response = platform
        .http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain; version=0.0.4"))
    );
    response.text().await.unwrap()
}

/// The value of the first sample whose line starts with `name{` and holds every label.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The sum of the samples whose line starts with `name{` and holds every label.
pub(crate) fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn requests_handled_messages_and_dead_letters_show_at_metrics() {
    let platform = Platform::launch(&["catalog", "orders"], &[], |_| {}, None).await;
    platform.product("MET-1", "2.50", 10).await;
    let placed = platform
        .place("c-metrics", json!([{"sku": "MET-1", "quantity": 2}]), None)
        .await;
    assert_eq!(placed.status(), 202);
    let order: serde_json::Value = placed.json().await.unwrap();
    let settled = platform.settled(order["id"].as_str().unwrap()).await;
    assert_eq!(settled["status"], "confirmed");

    // A message no handler can take, to see it counted and dead-lettered.
    platform.publish_poison("o-metrics").await;

    let orders_topic = format!(r#"messaging_destination_name="{}""#, topics::ORDERS);
    let shown = eventually(Duration::from_secs(30), || async {
        let text = scrape(&platform, &platform.catalog_url).await;
        sample(
            &text,
            "platform_messaging_dead_letters",
            &[
                r#"messaging_destination_subscription_name="catalog""#,
                &orders_topic,
            ],
        ) == Some(1.0)
    })
    .await;
    let catalog = scrape(&platform, &platform.catalog_url).await;
    assert!(shown, "{catalog}");
    assert!(
        catalog.contains(r#"target_info{service_name="catalog"} 1"#),
        "{catalog}"
    );
    // Nothing waits in catalog's subscription once the order is settled and the poison parked.
    assert!(
        eventually(Duration::from_secs(30), || async {
            let text = scrape(&platform, &platform.catalog_url).await;
            sample(
                &text,
                "platform_messaging_backlog",
                &[
                    r#"messaging_destination_subscription_name="catalog""#,
                    &orders_topic,
                ],
            ) == Some(0.0)
        })
        .await,
        "no backlog of 0 for catalog's subscription"
    );
    let outcome = |text: &str, outcome: &str| {
        sample(
            text,
            "platform_messaging_handler_outcomes_total",
            &[&orders_topic, &format!(r#"platform_outcome="{outcome}""#)],
        )
        .unwrap_or(0.0)
    };
    assert!(outcome(&catalog, "completed") >= 1.0, "{catalog}");
    assert_eq!(outcome(&catalog, "dead-lettered"), 1.0, "{catalog}");
    assert_eq!(
        sample(
            &catalog,
            "messaging_client_consumed_messages_total",
            &[
                r#"error_type="permanent""#,
                r#"messaging_destination_subscription_name="catalog""#
            ]
        ),
        Some(1.0),
        "{catalog}"
    );
    assert!(
        total(
            &catalog,
            "messaging_process_duration_seconds_count",
            &[&orders_topic]
        ) >= 2.0,
        "{catalog}"
    );

    let orders = scrape(&platform, &platform.orders_url).await;
    let posts = sample(
        &orders,
        "http_server_request_duration_seconds_count",
        &[
            r#"http_request_method="POST""#,
            r#"http_route="/v1/orders""#,
            r#"http_response_status_code="202""#,
        ],
    );
    assert_eq!(posts, Some(1.0), "{orders}");
    assert!(
        orders.contains(
            r#"http_server_request_duration_seconds_bucket{http_request_method="POST",http_response_status_code="202",http_route="/v1/orders",le="+Inf"} 1"#
        ),
        "{orders}"
    );
    assert!(orders.contains("# TYPE http_server_request_duration_seconds histogram"));
    // The Grafana dashboard asks for these very names.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/observability/grafana/platform-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let shown = format!("{catalog}\n{orders}");
    for panel in dashboard["panels"].as_array().unwrap() {
        let expr = panel["targets"][0]["expr"].as_str().unwrap();
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| {
                [
                    "http_",
                    "messaging_",
                    "db_client_",
                    "platform_messaging_",
                    "platform_outbox_",
                ]
                .iter()
                .any(|prefix| word.starts_with(prefix))
            })
        {
            // A metric, or a label of one.
            assert!(
                [
                    format!("\n{name}{{"),
                    format!("\n{name} "),
                    format!("{{{name}="),
                    format!(",{name}=")
                ]
                .iter()
                .any(|form| shown.contains(form)),
                "the dashboard asks for {name}, which the services do not show"
            );
        }
    }
    // The outbox relay catches up once the order is settled.
    let caught_up = eventually(Duration::from_secs(30), || async {
        let orders = scrape(&platform, &platform.orders_url).await;
        sample(&orders, "platform_outbox_lag_seconds", &[]) == Some(0.0)
    })
    .await;
    assert!(caught_up, "{orders}");
    platform.stop().await;
}

/// The address of this machine that is not loopback, if it has one.
fn outside_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route's source address.
    socket.connect("192.0.2.254:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn metrics_off_this_machine_need_the_operator_scope() {
    let Some(outside) = outside_address() else {
        eprintln!("skipped: this machine has no address besides loopback");
        return;
    };
    for (access, anonymous, with_token) in [
        ("loopback", 404, 404),
        ("operator", 401, 200),
        ("open", 200, 200),
        ("off", 404, 404),
    ] {
        let platform = Platform::launch(
            &["catalog"],
            &[
                ("http.host", "0.0.0.0".to_owned()),
                ("telemetry.metrics_access", access.to_owned()),
            ],
            |_| {},
            None,
        )
        .await;
        let port = platform.catalog_url.rsplit(':').next().unwrap().to_owned();
        let outside_url = format!("http://{outside}:{port}/metrics");
        let anonymous_status = platform
            .http
            .get(&outside_url)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(anonymous_status, anonymous, "{access}: no token");
        let operator = common::auth::mint_dev_token(
            &secrecy::SecretString::from(crate::helpers::SECRET.to_owned()),
            &platform.settings.auth,
            "ops",
            "platform.operator",
            600,
        )
        .unwrap();
        let status = platform
            .http
            .get(&outside_url)
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, with_token, "{access}: operator token");
        if access == "operator" {
            // Another scope is not enough.
            let status = platform
                .http
                .get(&outside_url)
                .bearer_auth(&platform.token)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 403, "{access}: token without the scope");
        }
        // On this machine, only "off" closes it.
        let local = platform
            .http
            .get(format!("{}/metrics", platform.catalog_url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            local,
            if access == "off" { 404 } else { 200 },
            "{access}: loopback"
        );
        platform.stop().await;
    }
}

/// An OTLP/HTTP receiver: keeps each request body posted to `/v1/metrics`.
async fn otlp_receiver() -> (
    String,
    Arc<Mutex<Vec<Vec<u8>>>>,
    actix_web::dev::ServerHandle,
) {
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let kept = received.clone();
    let (url, handle) = crate::helpers::serve_stub(move |config| {
        let kept = kept.clone();
        config.route(
            "/v1/metrics",
            web::post().to(move |body: web::Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(body.to_vec());
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .finish()
                }
            }),
        );
    });
    (url, received, handle)
}

#[tokio::test]
async fn metrics_are_pushed_to_an_otlp_receiver() {
    let (receiver, received, server) = otlp_receiver().await;
    let platform = Platform::launch(
        &["catalog"],
        &[
            ("telemetry.otlp_endpoint", receiver),
            ("telemetry.metrics_export_interval_ms", "1000".to_owned()),
        ],
        |_| {},
        None,
    )
    .await;
    platform.product("OTLP-1", "1.00", 1).await;
    let contains = |needle: &'static [u8]| {
        let received = received.clone();
        move || {
            let received = received.clone();
            async move {
                received
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|body| body.windows(needle.len()).any(|w| w == needle))
            }
        }
    };
    // Protobuf keeps strings as they are: the instrument, its route and the service name.
    assert!(
        eventually(
            Duration::from_secs(30),
            contains(b"http.server.request.duration")
        )
        .await
    );
    assert!(
        eventually(
            Duration::from_secs(30),
            contains(b"/v2/products/{sku}/stock")
        )
        .await
    );
    assert!(eventually(Duration::from_secs(30), contains(b"catalog")).await);
    platform.stop().await;
    server.stop(true).await;
}
