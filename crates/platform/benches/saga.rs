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
use support::saga::{SagaPlatform, drained, offer, report_open_loop, settled, updated_at};
use support::{env_number, percentile};

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = env_number("SAGA_ORDERS", 2000);
    let concurrency = env_number("SAGA_CONCURRENCY", 32);
    let dir = tempfile::tempdir()?;
    let _telemetry = support::quiet_telemetry("saga-bench")?;
    // SAGA_ONLY=catalog,orders measures a subset; by default every service consumes as it
    // would in `platform up`.
    let only: Vec<String> = std::env::var("SAGA_ONLY")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let platform = SagaPlatform::start(dir.path(), &only, concurrency).await?;
    let client = platform.client.clone();

    // One at a time: the time an order takes from POST to confirmed, as a client sees it.
    let (unloaded, _) = platform.unloaded(200, 0).await?;
    // Many at once: throughput from the first POST to the last confirmation.
    let loaded = platform.loaded(total, concurrency, 1000).await?;
    let used = &loaded.used;

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
        loaded.orders_per_second, loaded.posts_per_second
    );
    println!(
        "loaded: stored pending -> confirmed  median {:.2} ms   p99 {:.2} ms",
        percentile(&loaded.latencies, 0.5),
        percentile(&loaded.latencies, 0.99)
    );
    let per_order = |n: u64| n as f64 / total as f64;
    println!(
        "per order (loaded run, every service): store {:.1} point reads, {:.2} queries, {:.2} change-feed reads, {:.1} writes of {:.0} bytes on average",
        per_order(used.point_reads),
        per_order(used.queries),
        per_order(used.change_reads),
        per_order(used.writes),
        used.written_bytes as f64 / used.writes.max(1) as f64
    );
    println!(
        "per order (loaded run, every service): bus {:.2} messages published, {:.2} received, {:.2} settled, {:.2} empty receives",
        per_order(used.published),
        per_order(used.received),
        per_order(used.settled),
        per_order(used.empty_receives)
    );
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
    platform.stop().await
}
