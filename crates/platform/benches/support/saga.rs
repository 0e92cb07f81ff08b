//! The order saga as the saga and history benchmarks drive it: the platform started as
//! `platform up` starts it, a client that places orders and waits for them, and the
//! measurements both print.

use std::time::{Duration, Instant};

use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::percentile;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

pub struct Client {
    pub http: reqwest::Client,
    pub orders: String,
    pub token: String,
}

impl Client {
    pub async fn place(&self, n: usize) -> anyhow::Result<String> {
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

    pub async fn wait_confirmed(&self, id: &str) -> anyhow::Result<Value> {
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
pub struct Offered {
    pub phase: usize,
    /// From when it was due to its answer (so a slow server cannot hide its queue).
    pub post: Duration,
    pub id: Option<String>,
}

/// Offers orders at each step's rate for its duration, each at its due time whether or not
/// earlier ones were answered; returns every order offered and when each step ended.
pub async fn offer(
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
pub async fn drained(client: &Client) -> anyhow::Result<u64> {
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
pub async fn settled(client: &Client, offered: &[Offered]) -> Vec<(usize, Value)> {
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

pub fn updated_at(order: &Value) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(order["updatedAt"].as_str()?, &Rfc3339).ok()
}

/// Prints what an open-loop run came to.
pub fn report_open_loop(label: &str, offered: &[Offered], ended: &[(usize, Value)]) {
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

pub fn server_latency(order: &Value) -> Option<Duration> {
    use time::format_description::well_known::Rfc3339;
    let created = time::OffsetDateTime::parse(order["createdAt"].as_str()?, &Rfc3339).ok()?;
    let updated = time::OffsetDateTime::parse(order["updatedAt"].as_str()?, &Rfc3339).ok()?;
    (updated - created).try_into().ok()
}

/// The platform on a data folder, with ten products of ample stock and a client.
pub struct SagaPlatform {
    pub handles: Vec<common::http::ServiceHandle>,
    pub client: std::sync::Arc<Client>,
}

/// What a closed-loop run came to.
pub struct Loaded {
    pub orders_per_second: f64,
    pub posts_per_second: f64,
    pub ids: Vec<String>,
    pub used: common::usage::Usage,
    /// Stored pending -> confirmed, sorted.
    pub latencies: Vec<Duration>,
}

impl SagaPlatform {
    /// Starts the services named in `only` (all when empty) on `data`; the products are
    /// created unless they exist (a restart on the same folder).
    pub async fn start(
        data: &std::path::Path,
        only: &[String],
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let mut settings = common::config::Settings::defaults();
        settings.auth.hs256_secret = Some(SecretString::from(SECRET.to_owned()));
        // Started as `platform up` starts them: one registry, each service told where the
        // others listen.
        let sources = common::config::Sources::defaults_only()
            .with_override("data_dir", data.display().to_string())
            .with_override("http.port", "0");
        let mut loaded = platform::registry::load(&platform::registry::select(only)?, &sources)?;
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
            anyhow::ensure!(
                created.status() == 201 || created.status() == 409,
                "could not create {sku}"
            );
            http.put(format!("{catalog_url}/v2/products/{sku}/stock"))
                .bearer_auth(&token)
                .json(&json!({"onHand": 1_000_000_000}))
                .send()
                .await?;
        }
        Ok(Self {
            handles,
            client: std::sync::Arc::new(Client {
                http,
                orders: orders_url,
                token,
            }),
        })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        for handle in self.handles.into_iter().rev() {
            handle.stop(true).await?;
        }
        Ok(())
    }

    /// `count` orders one at a time: the time each takes from POST to confirmed, sorted,
    /// and their ids.
    pub async fn unloaded(
        &self,
        count: usize,
        first: usize,
    ) -> anyhow::Result<(Vec<Duration>, Vec<String>)> {
        let mut times = Vec::new();
        let mut ids = Vec::new();
        for n in first..first + count {
            let started = Instant::now();
            let id = self.client.place(n).await?;
            self.client.wait_confirmed(&id).await?;
            times.push(started.elapsed());
            ids.push(id);
        }
        times.sort();
        Ok((times, ids))
    }

    /// `total` orders with `concurrency` in flight: throughput from the first POST to the
    /// last confirmation, and what the store and bus did meanwhile.
    pub async fn loaded(
        &self,
        total: usize,
        concurrency: usize,
        first: usize,
    ) -> anyhow::Result<Loaded> {
        let client = &self.client;
        let started = Instant::now();
        let before = common::usage::usage();
        let ids: Vec<String> = futures::stream::iter(0..total)
            .map(|n| client.place(first + n))
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let accepted = started.elapsed();
        // Wait for the saga to drain, looking rarely so that looking is not the load.
        let looks = drained(client).await?;
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
        let mut latencies: Vec<Duration> = confirmed.iter().filter_map(server_latency).collect();
        latencies.sort();
        Ok(Loaded {
            orders_per_second: total as f64 / all_confirmed.as_secs_f64(),
            posts_per_second: total as f64 / accepted.as_secs_f64(),
            ids,
            used,
            latencies,
        })
    }
}
