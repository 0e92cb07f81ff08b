//! The order saga on the embedded default (SQLite store and bus), catalog and orders in
//! one process: orders per second from `POST /v1/orders` to `confirmed`, and the time one
//! order takes to reach `confirmed` (median, p99), unloaded and under load.
//!
//! Then an open loop (orders offered at a fixed rate whatever the answers, timed from when
//! each was due) and a spike (100 orders/s, 1,000 for 10 s, 100 again): POST latency,
//! POST -> confirmed, errors, and how long after the spike every order of it was confirmed.
//!
//! `cargo bench -p platform --bench saga` (SAGA_ORDERS, SAGA_CONCURRENCY, SAGA_ONLY,
//! SAGA_RATE, SAGA_OPEN_SECONDS, SAGA_SPIKE=0 to tune).

mod support;
use support::{env_number, percentile};

use std::time::{Duration, Instant};

use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

struct Client {
    http: reqwest::Client,
    orders: String,
    token: String,
}

impl Client {
    async fn place(&self, n: usize) -> anyhow::Result<String> {
        let body = json!({"customerId": format!("bench-{}", n % 50), "lines": [{"sku": format!("B-{}", n % 10), "quantity": 1}, {"sku": format!("B-{}", (n + 1) % 10), "quantity": 2}]});
        let response = self
            .http
            .post(format!("{}/v1/orders", self.orders))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 202,
            "place answered {}",
            response.status()
        );
        let order: Value = response.json().await?;
        Ok(order["id"].as_str().unwrap_or_default().to_owned())
    }

    async fn wait_confirmed(&self, id: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let order: Value = self
                .http
                .get(format!("{}/v1/orders/{id}", self.orders))
                .bearer_auth(&self.token)
                .send()
                .await?
                .json()
                .await?;
            match order["status"].as_str() {
                Some("confirmed") => return Ok(order),
                Some("pending") => {}
                other => anyhow::bail!("order {id} ended {other:?}"),
            }
            anyhow::ensure!(Instant::now() < deadline, "order {id} stayed pending");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// One order offered by the open loop.
struct Offered {
    phase: usize,
    /// From when it was due to its answer (so a slow server cannot hide its queue).
    post: Duration,
    id: Option<String>,
}

/// Offers orders at each step's rate for its duration, each at its due time whether or not
/// earlier ones were answered; returns every order offered and when each step ended.
async fn offer(
    client: &std::sync::Arc<Client>,
    steps: &[(f64, Duration)],
    first: usize,
) -> (Vec<Offered>, Vec<time::OffsetDateTime>) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut step_ends = Vec::new();
    let mut n = first;
    for (phase, &(rate, duration)) in steps.iter().enumerate() {
        let start = tokio::time::Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut due = start;
        while due < start + duration {
            tokio::time::sleep_until(due).await;
            let client = client.clone();
            tasks.spawn(async move {
                let id = client.place(n).await.ok();
                Offered {
                    phase,
                    post: due.elapsed(),
                    id,
                }
            });
            n += 1;
            due += interval;
        }
        step_ends.push(time::OffsetDateTime::now_utc());
    }
    let mut offered = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(done) = done {
            offered.push(done);
        }
    }
    (offered, step_ends)
}

/// Waits until no order is pending.
async fn drained(client: &Client) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut looks = 0;
    loop {
        looks += 1;
        let pending: Value = client
            .http
            .get(format!(
                "{}/v1/orders?status=pending&limit=1",
                client.orders
            ))
            .bearer_auth(&client.token)
            .send()
            .await?
            .json()
            .await?;
        if pending["items"]
            .as_array()
            .is_some_and(|items| items.is_empty())
        {
            return Ok(looks);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the saga did not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The orders offered, as they ended: each one's state and timestamps.
async fn settled(client: &Client, offered: &[Offered]) -> Vec<(usize, Value)> {
    futures::stream::iter(
        offered
            .iter()
            .filter_map(|o| Some((o.phase, o.id.clone()?))),
    )
    .map(|(phase, id)| async move {
        let order: Value = client
            .http
            .get(format!("{}/v1/orders/{id}", client.orders))
            .bearer_auth(&client.token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some((phase, order))
    })
    .buffer_unordered(32)
    .filter_map(|found| async move { found })
    .collect()
    .await
}

fn updated_at(order: &Value) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(order["updatedAt"].as_str()?, &Rfc3339).ok()
}

/// Prints what an open-loop run came to.
fn report_open_loop(label: &str, offered: &[Offered], ended: &[(usize, Value)]) {
    let mut posts: Vec<Duration> = offered.iter().map(|o| o.post).collect();
    posts.sort();
    let refused = offered.iter().filter(|o| o.id.is_none()).count();
    let not_confirmed = ended
        .iter()
        .filter(|(_, order)| order["status"] != "confirmed")
        .count();
    let mut confirmed: Vec<Duration> = ended
        .iter()
        .filter_map(|(_, order)| server_latency(order))
        .collect();
    confirmed.sort();
    println!(
        "{label}: {} offered, {refused} POSTs failed, {not_confirmed} not confirmed; POST p50 {:.2} ms p99 {:.2} ms; POST -> confirmed p50 {:.2} ms p99 {:.2} ms",
        offered.len(),
        percentile(&posts, 0.5),
        percentile(&posts, 0.99),
        percentile(&confirmed, 0.5),
        percentile(&confirmed, 0.99),
    );
}

fn server_latency(order: &Value) -> Option<Duration> {
    use time::format_description::well_known::Rfc3339;
    let created = time::OffsetDateTime::parse(order["createdAt"].as_str()?, &Rfc3339).ok()?;
    let updated = time::OffsetDateTime::parse(order["updatedAt"].as_str()?, &Rfc3339).ok()?;
    (updated - created).try_into().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = env_number("SAGA_ORDERS", 2000);
    let concurrency = env_number("SAGA_CONCURRENCY", 32);
    let dir = tempfile::tempdir()?;
    let mut settings = common::config::Settings::defaults();
    settings.data_dir = dir.path().to_owned();
    settings.auth.hs256_secret = Some(SecretString::from(SECRET.to_owned()));
    settings.rate_limit.enabled = false;
    settings.telemetry.log_level = "error".into();
    let _telemetry = common::telemetry::init(&settings.telemetry, "saga-bench")?;
    // Started as `platform up` starts them: one registry, each service told where the
    // others listen.
    let sources = common::config::Sources::defaults_only()
        .with_override("data_dir", dir.path().display().to_string())
        .with_override("http.port", "0");
    // SAGA_ONLY=catalog,orders measures a subset; by default every service consumes as it
    // would in `platform up`.
    let only: Vec<String> = std::env::var("SAGA_ONLY")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut loaded = platform::registry::load(&platform::registry::select(&only)?, &sources)?;
    for service in &mut loaded {
        let shared = service.settings();
        shared.auth.hs256_secret = settings.auth.hs256_secret.clone();
        shared.rate_limit.enabled = false;
    }
    let handles = platform::registry::start(loaded, None).await?;
    let url = |name: &str| platform::registry::url(&handles, name).unwrap_or_default();
    let (catalog_url, orders_url) = (url("catalog"), url("orders"));

    let token = common::auth::mint_dev_token(
        &SecretString::from(SECRET.to_owned()),
        &settings.auth,
        "bench",
        "catalog.read catalog.write orders.read orders.write",
        3600,
    )?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .build()?;
    for n in 0..10 {
        let sku = format!("B-{n}");
        let created = http
            .post(format!("{catalog_url}/v2/products"))
            .bearer_auth(&token)
            .json(&json!({"sku": sku, "name": sku, "category": "bench", "price": {"amount": "3.50", "currency": "EUR"}}))
            .send()
            .await?;
        anyhow::ensure!(created.status() == 201, "could not create {sku}");
        http.put(format!("{catalog_url}/v2/products/{sku}/stock"))
            .bearer_auth(&token)
            .json(&json!({"onHand": 1_000_000_000}))
            .send()
            .await?;
    }
    let client = Client {
        http,
        orders: orders_url,
        token,
    };

    // One at a time: the time an order takes from POST to confirmed, as a client sees it.
    let mut unloaded = Vec::new();
    for n in 0..200 {
        let started = Instant::now();
        let id = client.place(n).await?;
        client.wait_confirmed(&id).await?;
        unloaded.push(started.elapsed());
    }
    unloaded.sort();

    // Many at once: throughput from the first POST to the last confirmation.
    let started = Instant::now();
    let before = common::usage::usage();
    let ids: Vec<String> = futures::stream::iter(0..total)
        .map(|n| client.place(1000 + n))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let accepted = started.elapsed();
    // Wait for the saga to drain, looking rarely so that looking is not the load.
    let looks = drained(&client).await?;
    let all_confirmed = started.elapsed();
    let mut used = common::usage::usage() - before;
    // The benchmark's own looks at the pending list are not the saga's.
    used.queries = used.queries.saturating_sub(looks);
    let confirmed: Vec<Value> = futures::stream::iter(ids.iter())
        .map(|id| client.wait_confirmed(id))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let mut loaded: Vec<Duration> = confirmed.iter().filter_map(server_latency).collect();
    loaded.sort();

    println!(
        "order saga on the embedded store and bus, {} in one process, 2 cores",
        if only.is_empty() {
            "every service".to_owned()
        } else {
            only.join(" + ")
        }
    );
    println!(
        "unloaded (200 orders, one at a time): POST -> confirmed  median {:.2} ms   p99 {:.2} ms",
        percentile(&unloaded, 0.5),
        percentile(&unloaded, 0.99)
    );
    println!(
        "loaded ({total} orders, {concurrency} in flight): {:.0} orders/s POST -> confirmed ({:.0} POST/s accepted)",
        total as f64 / all_confirmed.as_secs_f64(),
        total as f64 / accepted.as_secs_f64()
    );
    println!(
        "loaded: stored pending -> confirmed  median {:.2} ms   p99 {:.2} ms",
        percentile(&loaded, 0.5),
        percentile(&loaded, 0.99)
    );
    let per_order = |n: u64| n as f64 / total as f64;
    println!(
        "per order (loaded run, both services): store {:.1} point reads, {:.2} queries, {:.2} change-feed reads, {:.1} writes of {:.0} bytes on average",
        per_order(used.point_reads),
        per_order(used.queries),
        per_order(used.change_reads),
        per_order(used.writes),
        used.written_bytes as f64 / used.writes.max(1) as f64
    );
    println!(
        "per order (loaded run, both services): bus {:.2} messages published, {:.2} received, {:.2} settled, {:.2} empty receives",
        per_order(used.published),
        per_order(used.received),
        per_order(used.settled),
        per_order(used.empty_receives)
    );
    let client = std::sync::Arc::new(client);
    let rate = env_number("SAGA_RATE", 1000) as f64;
    let open_seconds = env_number("SAGA_OPEN_SECONDS", 5) as u64;
    if open_seconds > 0 {
        let (offered, _) = offer(
            &client,
            &[(rate, Duration::from_secs(open_seconds))],
            1_000_000,
        )
        .await;
        drained(&client).await?;
        let ended = settled(&client, &offered).await;
        report_open_loop(
            &format!("open loop at {rate:.0} orders/s for {open_seconds} s"),
            &offered,
            &ended,
        );
    }
    if env_number("SAGA_SPIKE", 1) == 1 {
        let steps = [
            (100.0, Duration::from_secs(5)),
            (1000.0, Duration::from_secs(10)),
            (100.0, Duration::from_secs(5)),
        ];
        let (offered, step_ends) = offer(&client, &steps, 2_000_000).await;
        drained(&client).await?;
        let ended = settled(&client, &offered).await;
        report_open_loop(
            "spike 100 -> 1,000 (10 s) -> 100 orders/s",
            &offered,
            &ended,
        );
        // Caught up: every order offered up to the spike's end is confirmed.
        let last_of_spike = ended
            .iter()
            .filter(|(phase, _)| *phase <= 1)
            .filter_map(|(_, order)| updated_at(order))
            .max();
        if let Some(last) = last_of_spike {
            println!(
                "spike: every order of it confirmed {:.2} s after the spike ended",
                (last - step_ends[1]).as_seconds_f64().max(0.0)
            );
        }
    }
    for handle in handles.into_iter().rev() {
        handle.stop(true).await?;
    }
    Ok(())
}
