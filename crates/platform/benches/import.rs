//! A product feed through sync into the catalog on the embedded default, catalog and sync
//! in one process: rows per second from the upload to the import's end, and the process's
//! peak memory, for a fresh import and for the same feed again (every row unchanged).
//!
//! `cargo bench -p platform --bench import` (IMPORT_ROWS, IMPORT_BATCH, IMPORT_IN_FLIGHT to tune).

mod support;
use support::env_number;

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

/// The process's peak resident memory so far, in MiB (Linux).
fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn import(
    http: &reqwest::Client,
    sync: &str,
    token: &str,
    feed: &std::path::Path,
) -> anyhow::Result<(Value, Duration)> {
    let started = Instant::now();
    let file = tokio::fs::File::open(feed).await?;
    let response = http
        .post(format!("{sync}/v1/imports?name=bench.csv"))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::new(file),
        ))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 202,
        "upload answered {}",
        response.status()
    );
    let queued: Value = response.json().await?;
    let id = queued["id"].as_str().unwrap_or_default().to_owned();
    loop {
        let job: Value = http
            .get(format!("{sync}/v1/imports/{id}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        if job["state"] == "completed" || job["state"] == "failed" {
            return Ok((job, started.elapsed()));
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the import did not end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows = env_number("IMPORT_ROWS", 100_000);
    let batch = env_number("IMPORT_BATCH", 1000);
    let in_flight = env_number("IMPORT_IN_FLIGHT", 4);
    let dir = tempfile::tempdir()?;
    let feed = dir.path().join("feed.csv");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&feed)?);
        writeln!(out, "sku,name,description,category,price,currency,onHand")?;
        for n in 0..rows {
            writeln!(
                out,
                "BENCH-{n},Product {n},A product of the benchmark feed,cat-{},{}.{:02},EUR,{}",
                n % 20,
                n % 500 + 1,
                n % 100,
                n % 1000
            )?;
        }
    }
    let mut settings = common::config::Settings::defaults();
    settings.telemetry.log_level = "error".into();
    let _telemetry = common::telemetry::init(&settings.telemetry, "import-bench")?;
    let sources = common::config::Sources::defaults_only()
        .with_override("data_dir", dir.path().display().to_string())
        .with_override("http.port", "0")
        .with_override("imports.batch_size", batch.to_string())
        .with_override("imports.batches_in_flight", in_flight.to_string())
        .with_override("imports.poll_interval_ms", "20");
    let selected = platform::registry::select(&["catalog".to_owned(), "sync".to_owned()])?;
    let mut loaded = platform::registry::load(&selected, &sources)?;
    for service in &mut loaded {
        let shared = service.settings();
        shared.auth.hs256_secret = Some(SecretString::from(SECRET.to_owned()));
        shared.rate_limit.enabled = false;
    }
    let auth = loaded[0].settings().auth.clone();
    let handles = platform::registry::start(loaded, None).await?;
    let sync = platform::registry::url(&handles, "sync").unwrap_or_default();
    let token = common::auth::mint_dev_token(
        &SecretString::from(SECRET.to_owned()),
        &auth,
        "bench",
        "sync.admin",
        3600,
    )?;
    let http = reqwest::Client::new();
    let before = peak_memory_mib().unwrap_or(0.0);
    let (fresh, fresh_time) = import(&http, &sync, &token, &feed).await?;
    let (again, again_time) = import(&http, &sync, &token, &feed).await?;
    let size_mib = std::fs::metadata(&feed)?.len() as f64 / (1024.0 * 1024.0);
    println!(
        "feed import through sync into the catalog, embedded store, one process, 2 cores; {rows} rows ({size_mib:.1} MiB), batches of {batch}, {in_flight} in flight"
    );
    for (label, job, time) in [
        ("fresh", &fresh, fresh_time),
        ("again (unchanged)", &again, again_time),
    ] {
        println!(
            "{label:<18} {:>8.0} rows/s  ({} rows in {:.1} s: {} created, {} updated, {} unchanged, {} failed; {})",
            rows as f64 / time.as_secs_f64(),
            job["processed"],
            time.as_secs_f64(),
            job["created"],
            job["updated"],
            job["unchanged"],
            job["failed"],
            job["state"].as_str().unwrap_or("?"),
        );
    }
    println!(
        "peak memory of the process: {:.0} MiB (before the imports: {before:.0} MiB)",
        peak_memory_mib().unwrap_or(0.0)
    );
    for handle in handles.into_iter().rev() {
        handle.stop(true).await?;
    }
    Ok(())
}
