//! Whether history matters: the saga's figures on a fresh data folder, then on the same
//! folder once it holds the history of a million past orders.
//!
//! The history is what the first run's orders left in every service's store (the order,
//! its reservation, its holds, whatever else names it), copied with a fresh order id in
//! place of each until the folder holds `HISTORY_ORDERS` orders. The platform is then
//! started again, left until it is quiet (its change-feed readers have read past the
//! copies, as they would have long ago on a real folder), and measured the same way.
//!
//! `cargo bench -p platform --bench history` (HISTORY_ORDERS, SAGA_ORDERS,
//! SAGA_CONCURRENCY to tune).

mod support;
use support::saga::SagaPlatform;
use support::{env_number, percentile};

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::store::embedded::{Durability, EmbeddedStore};
use common::store::{BatchOp, Document, DocumentStore};
use futures::StreamExt;

/// The figures compared.
struct Figures {
    unloaded_median_ms: f64,
    unloaded_p99_ms: f64,
    orders_per_second: f64,
    posts_per_second: f64,
}

async fn measure(
    platform: &SagaPlatform,
    total: usize,
    concurrency: usize,
    first: usize,
) -> anyhow::Result<(Figures, Vec<String>)> {
    let (unloaded, mut ids) = platform.unloaded(200, first).await?;
    let loaded = platform.loaded(total, concurrency, first + 200).await?;
    ids.extend(loaded.ids);
    Ok((
        Figures {
            unloaded_median_ms: percentile(&unloaded, 0.5),
            unloaded_p99_ms: percentile(&unloaded, 0.99),
            orders_per_second: loaded.orders_per_second,
            posts_per_second: loaded.posts_per_second,
        },
        ids,
    ))
}

/// An order id (a UUID) in `text` that is one of `ids`.
fn order_id_in<'a>(text: &str, ids: &HashSet<&'a str>) -> Option<&'a str> {
    let bytes = text.as_bytes();
    if bytes.len() < 36 {
        return None;
    }
    (0..=bytes.len() - 36).find_map(|at| {
        let window = &bytes[at..at + 36];
        let shaped =
            window[8] == b'-' && window[13] == b'-' && window[18] == b'-' && window[23] == b'-';
        if !shaped {
            return None;
        }
        let candidate = std::str::from_utf8(window).ok()?;
        ids.get(candidate).copied()
    })
}

/// Every current document of a container (the change feed from the start).
async fn every_document(store: &EmbeddedStore, container: &str) -> anyhow::Result<Vec<Document>> {
    let mut documents = Vec::new();
    let mut since = None;
    loop {
        let batch = store.changes(container, since.as_ref(), 1000).await?;
        if batch.documents.is_empty() {
            return Ok(documents);
        }
        documents.extend(batch.documents);
        since = Some(batch.checkpoint);
    }
}

/// Copies what each of `orders` left in every store `copies` times, with a fresh id in place
/// of the order's; returns how many documents were written.
async fn seed_history(data: &Path, orders: &[String], copies: usize) -> anyhow::Result<u64> {
    let ids: HashSet<&str> = orders.iter().map(String::as_str).collect();
    let mut written = 0u64;
    for descriptor in platform::registry::descriptors() {
        let path = data.join(format!("{}.db", descriptor.name));
        let store = EmbeddedStore::open(&path, Durability::Normal)?;
        for container in descriptor.containers {
            let templates: Vec<(String, Document)> = every_document(&store, container)
                .await?
                .into_iter()
                .filter_map(|document| {
                    let text = format!(
                        "{}\n{}\n{}",
                        document.id, document.partition_key, document.body
                    );
                    order_id_in(&text, &ids).map(|id| (id.to_owned(), document))
                })
                .collect();
            if templates.is_empty() {
                continue;
            }
            // One copy of every order at a time, grouped per partition, written a batch
            // (100) at a time, many at once.
            for _ in 0..copies {
                let mut fresh: HashMap<&str, String> = HashMap::new();
                let mut per_partition: HashMap<String, Vec<BatchOp>> = HashMap::new();
                for (order_id, document) in &templates {
                    let new_id = fresh
                        .entry(order_id.as_str())
                        .or_insert_with(|| uuid::Uuid::now_v7().to_string());
                    let body = document.body.to_string().replace(order_id.as_str(), new_id);
                    per_partition
                        .entry(document.partition_key.replace(order_id.as_str(), new_id))
                        .or_default()
                        .push(BatchOp::Create {
                            id: document.id.replace(order_id.as_str(), new_id),
                            body: serde_json::from_str(&body)?,
                        });
                }
                let batches: Vec<(String, Vec<BatchOp>)> = per_partition
                    .into_iter()
                    .flat_map(|(pk, ops)| {
                        ops.chunks(100)
                            .map(|chunk| (pk.clone(), chunk.to_vec()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                written += batches.iter().map(|(_, ops)| ops.len() as u64).sum::<u64>();
                let results: Vec<_> = futures::stream::iter(batches)
                    .map(|(pk, ops)| {
                        let store = store.clone();
                        async move { store.batch(container, &pk, ops).await }
                    })
                    .buffer_unordered(32)
                    .collect()
                    .await;
                for result in results {
                    result?;
                }
            }
        }
    }
    Ok(written)
}

/// This process's CPU time so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which may hold spaces): utime and stime are the 12th and
    // 13th after it, in clock ticks (100 a second).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Waits until the process has used under 5% of a core for two seconds in a row (its feed
/// readers are through the copies); returns how long that took.
async fn quiet() -> Duration {
    let started = Instant::now();
    let mut calm = 0;
    while calm < 2 && started.elapsed() < Duration::from_secs(900) {
        let before = cpu_time();
        tokio::time::sleep(Duration::from_secs(1)).await;
        calm = if cpu_time() - before < Duration::from_millis(50) {
            calm + 1
        } else {
            0
        };
    }
    started.elapsed()
}

fn size_of_folder(data: &Path) -> u64 {
    std::fs::read_dir(data)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .map(|meta| meta.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let history = env_number("HISTORY_ORDERS", 1_000_000);
    let total = env_number("SAGA_ORDERS", 2000);
    let concurrency = env_number("SAGA_CONCURRENCY", 32);
    let dir = tempfile::tempdir()?;
    let _telemetry = support::quiet_telemetry("history-bench")?;

    let platform = SagaPlatform::start(dir.path(), &[], concurrency).await?;
    let (fresh, ids) = measure(&platform, total, concurrency, 0).await?;
    platform.stop().await?;

    let copies = history.div_ceil(ids.len()).saturating_sub(1);
    let seeding = Instant::now();
    let written = seed_history(dir.path(), &ids, copies).await?;
    let seeded_in = seeding.elapsed();
    let past_orders = ids.len() * (copies + 1);

    let platform = SagaPlatform::start(dir.path(), &[], concurrency).await?;
    let settled_in = quiet().await;
    let (aged, _) = measure(&platform, total, concurrency, 10_000_000).await?;
    platform.stop().await?;

    println!(
        "order saga, every service in one process, 2 cores: a fresh folder against one holding history"
    );
    println!(
        "history: {past_orders} past orders ({written} documents copied in {:.0} s), data folder {:.0} MiB; the restarted platform was quiet after {:.0} s",
        seeded_in.as_secs_f64(),
        size_of_folder(dir.path()) as f64 / (1024.0 * 1024.0),
        settled_in.as_secs_f64()
    );
    let row = |label: &str, fresh: f64, aged: f64, unit: &str| {
        println!(
            "{label:<42} fresh {fresh:>9.2} {unit:<9} with history {aged:>9.2} {unit:<9} ({:+.1}%)",
            (aged - fresh) / fresh * 100.0
        );
    };
    row(
        "unloaded POST -> confirmed, median",
        fresh.unloaded_median_ms,
        aged.unloaded_median_ms,
        "ms",
    );
    row(
        "unloaded POST -> confirmed, p99",
        fresh.unloaded_p99_ms,
        aged.unloaded_p99_ms,
        "ms",
    );
    row(
        &format!("loaded ({total} orders, {concurrency} in flight)"),
        fresh.orders_per_second,
        aged.orders_per_second,
        "orders/s",
    );
    row(
        "loaded, POSTs accepted",
        fresh.posts_per_second,
        aged.posts_per_second,
        "POST/s",
    );
    Ok(())
}
