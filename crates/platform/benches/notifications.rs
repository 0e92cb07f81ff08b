//! Webhook deliveries on the embedded default (SQLite store and bus): events published on
//! the bus, delivered signed to local receivers. Prints deliveries per second and the
//! added latency from publish to receipt (p50, p99), unloaded and under load, beside the
//! receivers' own ceiling (the same POSTs sent straight to them) measured in the same run.
//!
//! `cargo bench -p platform --bench notifications` (NOTIFY_EVENTS, NOTIFY_ENDPOINTS to tune).

mod support;
use support::{env_number, percentile};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use common::bus::{CloudEvent, Message, topics};
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

/// When each event's deliveries arrived, by event id.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// A receiver on loopback that takes every POST and notes when each event arrived.
fn receiver(arrivals: Arrivals) -> anyhow::Result<(String, actix_web::dev::ServerHandle)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let server = HttpServer::new(move || {
        let arrivals = arrivals.clone();
        App::new().route(
            "/hook",
            web::post().to(move |body: web::Bytes| {
                let arrivals = arrivals.clone();
                async move {
                    let at = Instant::now();
                    if let Ok(event) = serde_json::from_slice::<Value>(&body)
                        && let Some(id) = event["id"].as_str()
                        && let Ok(mut arrivals) = arrivals.lock()
                    {
                        arrivals.entry(id.to_owned()).or_default().push(at);
                    }
                    HttpResponse::NoContent().finish()
                }
            }),
        )
    })
    .workers(2)
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((url, handle))
}

fn event(n: usize) -> CloudEvent {
    CloudEvent::new(
        "orders",
        "orders.order.confirmed.v1",
        format!("bench-order-{n}"),
        json!({"orderId": format!("bench-order-{n}"), "customerId": format!("c-{}", n % 50)}),
    )
}

/// Waits until every event in `sent` has `endpoints` arrivals; returns each delivery's
/// latency from its publish.
async fn all_arrived(
    arrivals: &Arrivals,
    sent: &HashMap<String, Instant>,
    endpoints: usize,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = arrivals.lock().is_ok_and(|arrivals| {
            sent.keys()
                .all(|id| arrivals.get(id).is_some_and(|at| at.len() >= endpoints))
        });
        if done {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "deliveries did not all arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let arrivals = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut latencies: Vec<Duration> = sent
        .iter()
        .flat_map(|(id, published)| {
            arrivals
                .get(id)
                .into_iter()
                .flatten()
                .map(move |at| at.duration_since(*published))
        })
        .collect();
    latencies.sort();
    Ok(latencies)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = env_number("NOTIFY_EVENTS", 5000);
    let endpoints = env_number("NOTIFY_ENDPOINTS", 4);
    let dir = tempfile::tempdir()?;
    let mut settings = common::config::Settings::defaults();
    settings.data_dir = dir.path().to_owned();
    settings.auth.hs256_secret = Some(SecretString::from(SECRET.to_owned()));
    settings.telemetry.log_level = "error".into();
    let _telemetry = common::telemetry::init(&settings.telemetry, "notifications-bench")?;
    let sources = common::config::Sources::defaults_only()
        .with_override("data_dir", dir.path().display().to_string())
        .with_override("http.port", "0")
        .with_override("webhooks.allow_private_targets", "true")
        .with_override("email.kind", "off");
    let mut loaded = platform::registry::load(
        &platform::registry::select(&["notifications".to_owned()])?,
        &sources,
    )?;
    for service in &mut loaded {
        let shared = service.settings();
        shared.auth.hs256_secret = settings.auth.hs256_secret.clone();
        shared.rate_limit.enabled = false;
    }
    // One bus instance for the services and the publisher here, as in `platform up`.
    let bus = common::runtime::adapters::open_bus(&settings)?;
    let handles = platform::registry::start(loaded, Some(bus.clone())).await?;
    let notifications = platform::registry::url(&handles, "notifications").unwrap_or_default();
    let token = common::auth::mint_dev_token(
        &SecretString::from(SECRET.to_owned()),
        &settings.auth,
        "bench",
        "notifications.admin",
        3600,
    )?;
    let http = reqwest::Client::new();
    let arrivals: Arrivals = Arc::default();
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..endpoints {
        let (url, server) = receiver(arrivals.clone())?;
        let created = http
            .post(format!("{notifications}/v1/subscriptions"))
            .bearer_auth(&token)
            .json(&json!({"url": url, "eventTypes": ["orders.*"]}))
            .send()
            .await?;
        anyhow::ensure!(
            created.status() == 201,
            "subscription: {}",
            created.status()
        );
        servers.push(server);
        urls.push(url);
    }

    // The receivers' ceiling: the same deliveries POSTed straight to them, 16 per endpoint
    // in flight as notifications sends them.
    let direct_total = total.min(5000) * endpoints;
    let body = serde_json::to_vec(&event(0))?;
    let started = Instant::now();
    futures::stream::iter(0..direct_total)
        .map(|n| {
            http.post(&urls[n % endpoints])
                .header("content-type", "application/json")
                .header("webhook-id", "msg_direct")
                .body(body.clone())
                .send()
        })
        .buffer_unordered(16 * endpoints)
        .collect::<Vec<_>>()
        .await;
    let direct_rate = direct_total as f64 / started.elapsed().as_secs_f64();
    arrivals
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clear();

    // One at a time: the latency a single event adds, publish to receipt.
    let mut sent = HashMap::new();
    for n in 0..200 {
        let event = event(n);
        let published = Instant::now();
        bus.publish(topics::ORDERS, Message::new(event.clone()))
            .await?;
        sent.insert(event.id.clone(), published);
        let one = HashMap::from([(event.id.clone(), published)]);
        all_arrived(&arrivals, &one, endpoints).await?;
    }
    let unloaded = all_arrived(&arrivals, &sent, endpoints).await?;

    // Steady: events at a rate well within capacity (STEADY_RATE deliveries/s), for the
    // latency notifications adds when it is not behind.
    let steady_rate = env_number("NOTIFY_STEADY_RATE", 1000);
    let per_tick = (steady_rate / endpoints / 100).max(1);
    let mut sent = HashMap::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let mut n = 500_000;
    while sent.len() < 2000 {
        ticks.tick().await;
        let events: Vec<CloudEvent> = (0..per_tick).map(|k| event(n + k)).collect();
        n += per_tick;
        let published = Instant::now();
        for event in &events {
            sent.insert(event.id.clone(), published);
        }
        bus.publish_many(
            topics::ORDERS,
            events.into_iter().map(Message::new).collect(),
        )
        .await?;
    }
    let steady = all_arrived(&arrivals, &sent, endpoints).await?;

    // Many at once: published in batches as an outbox relay does, delivered as fast as it
    // goes.
    let mut sent = HashMap::new();
    let before = common::usage::usage();
    let started = Instant::now();
    for chunk in (1000..1000 + total).collect::<Vec<_>>().chunks(100) {
        let events: Vec<CloudEvent> = chunk.iter().map(|n| event(*n)).collect();
        let published = Instant::now();
        for event in &events {
            sent.insert(event.id.clone(), published);
        }
        bus.publish_many(
            topics::ORDERS,
            events.into_iter().map(Message::new).collect(),
        )
        .await?;
    }
    let loaded = all_arrived(&arrivals, &sent, endpoints).await?;
    let elapsed = started.elapsed();
    let used = common::usage::usage() - before;
    let deliveries = total * endpoints;

    println!(
        "webhook deliveries on the embedded store and bus, notifications alone, {endpoints} local receivers, 2 cores"
    );
    println!(
        "receivers' ceiling (the same POSTs sent straight to them): {direct_rate:.0} requests/s"
    );
    println!(
        "unloaded (200 events one at a time, {endpoints} deliveries each): publish -> received  p50 {:.2} ms   p99 {:.2} ms",
        percentile(&unloaded, 0.5),
        percentile(&unloaded, 0.99)
    );
    println!(
        "steady ({} deliveries/s offered, 2000 events): publish -> received  p50 {:.2} ms   p99 {:.2} ms",
        per_tick * endpoints * 100,
        percentile(&steady, 0.5),
        percentile(&steady, 0.99)
    );
    println!(
        "loaded ({total} events x {endpoints} endpoints = {deliveries} deliveries): {:.0} deliveries/s ({:.2} of the receivers' ceiling)",
        deliveries as f64 / elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64() / direct_rate
    );
    println!(
        "loaded (all published at once, so mostly time queued): publish -> received  p50 {:.2} ms   p99 {:.2} ms",
        percentile(&loaded, 0.5),
        percentile(&loaded, 0.99)
    );
    let per = |n: u64| n as f64 / deliveries as f64;
    println!(
        "per delivery: store {:.2} point reads, {:.3} queries, {:.2} writes; bus {:.3} received, {:.3} settled",
        per(used.point_reads),
        per(used.queries),
        per(used.writes),
        per(used.received),
        per(used.settled)
    );
    for handle in handles.into_iter().rev() {
        handle.stop(true).await?;
    }
    for server in servers {
        server.stop(true).await;
    }
    Ok(())
}
