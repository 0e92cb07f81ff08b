//! Throughput of `GET /v1/products/{sku}` on the real catalog (embedded store, auth, rate
//! limiting, tracing), next to a minimal actix handler returning a constant JSON body,
//! measured in the same run with the same client. Prints requests per second.
//!
//! `cargo bench -p catalog --bench get_product` (BENCH_SECONDS, BENCH_CONNECTIONS to tune).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use secrecy::SecretString;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Figure {
    requests: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn hammer(
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    connections: u64,
    duration: Duration,
) -> anyhow::Result<Figure> {
    // Warm up the connections and caches.
    for _ in 0..connections * 4 {
        let mut request = client.get(&url);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        anyhow::ensure!(
            request.send().await?.status() == 200,
            "warm-up request failed"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, token, stop, count) = (
            client.clone(),
            url.clone(),
            token.clone(),
            stop.clone(),
            count.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let mut request = client.get(&url);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await?;
                anyhow::ensure!(response.status() == 200, "status {}", response.status());
                response.bytes().await?;
                latencies.push(sent.elapsed());
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Figure {
        requests: count.load(Ordering::Relaxed),
        seconds,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    })
}

fn print(name: &str, figure: &Figure) {
    println!(
        "{name:<38} {:>10.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} requests in {:.1} s)",
        figure.requests as f64 / figure.seconds,
        figure.p50_ms,
        figure.p99_ms,
        figure.requests,
        figure.seconds
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_number("BENCH_SECONDS", 5);
    let connections = env_number("BENCH_CONNECTIONS", 32);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // One server worker shows the server's own cost (the minimal handler is then held back by
    // the client); one per core is what a service on its own runs with (`http.workers = 0`).
    let worker_counts = match std::env::var("BENCH_WORKERS") {
        Ok(value) => vec![value.parse()?],
        Err(_) if cores > 1 => vec![1, cores],
        Err(_) => vec![1],
    };
    let mut settings = common::config::Settings::defaults();
    settings.auth.hs256_secret = Some(SecretString::from(SECRET.to_owned()));
    settings.rate_limit.per_second = 10_000_000;
    settings.rate_limit.burst = 10_000_000;
    settings.telemetry.log_level = "warn".into();
    let _telemetry = common::telemetry::init(&settings.telemetry, "catalog-bench")?;
    let token = common::auth::mint_dev_token(
        &SecretString::from(SECRET.to_owned()),
        &settings.auth,
        "bench",
        "catalog.read catalog.write",
        3600,
    )?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections as usize)
        .build()?;
    let duration = Duration::from_secs(seconds);
    println!("{connections} connections, {seconds} s each, client in the same process");
    for workers in worker_counts {
        let dir = tempfile::tempdir()?;
        settings.data_dir = dir.path().to_owned();
        settings.http.workers = workers;
        let catalog = catalog::startup::start(
            settings.clone(),
            common::runtime::Launch::on(TcpListener::bind("127.0.0.1:0")?),
        )
        .await?;
        let created = client
            .post(format!("{}/v1/products", catalog.url()))
            .bearer_auth(&token)
            .json(&serde_json::json!({"sku": "BENCH-1", "name": "Bench widget", "description": "measured", "category": "bench", "price": 12.50, "currency": "EUR"}))
            .send()
            .await?;
        anyhow::ensure!(created.status() == 201, "could not create the product");

        let baseline_listener = TcpListener::bind("127.0.0.1:0")?;
        let baseline_url = format!("http://{}/constant", baseline_listener.local_addr()?);
        let baseline = HttpServer::new(|| {
            App::new().route(
                "/constant",
                web::get().to(|| async {
                    HttpResponse::Ok().json(serde_json::json!({"sku": "BENCH-1", "name": "Bench widget", "price": 12.5, "currency": "EUR"}))
                }),
            )
        })
        .workers(workers)
        .listen(baseline_listener)?
        .disable_signals()
        .run();
        let baseline_handle = baseline.handle();
        tokio::spawn(baseline);

        println!("{workers} server worker(s):");
        let minimal = hammer(client.clone(), baseline_url, None, connections, duration).await?;
        print("minimal actix handler (constant JSON)", &minimal);
        let product = hammer(
            client.clone(),
            format!("{}/v1/products/BENCH-1", catalog.url()),
            Some(token.clone()),
            connections,
            duration,
        )
        .await?;
        print("GET /v1/products/{sku}", &product);
        println!(
            "catalog serves {:.0}% of the minimal handler's rate ({workers} server worker(s))",
            100.0 * (product.requests as f64 / product.seconds)
                / (minimal.requests as f64 / minimal.seconds)
        );
        baseline_handle.stop(true).await;
        catalog.stop(true).await?;
    }
    Ok(())
}
