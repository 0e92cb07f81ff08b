//! Cold starts, as serverless pays for them: each service binary (release) from exec to its
//! first authenticated 200, 20 starts each (p50, p99), as a process and as a Functions
//! custom handler; and its resident memory idle after the start and after 2,000 requests.
//!
//! `cargo bench -p platform --bench cold_start` (COLD_STARTS to change the count;
//! COLD_PROFILE=dist measures the binaries as they ship, built with fat LTO).

mod support;
use support::{env_number, percentile};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

/// Each service, an authenticated read of it, and the scope that read needs.
const SERVICES: &[(&str, &str, &str)] = &[
    ("catalog", "/v2/products?limit=1", "catalog.read"),
    ("orders", "/v1/orders?limit=1", "orders.read"),
    ("sync", "/v1/imports?limit=1", "sync.admin"),
    (
        "notifications",
        "/v1/subscriptions?limit=1",
        "notifications.admin",
    ),
];

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A blocking GET on loopback with the token; true for a 200. (No client library: its own
/// start-up would be measured.)
fn get_ok(port: u16, path: &str, token: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

struct Started {
    child: Child,
    port: u16,
    ready_after: Duration,
}

fn start(
    binary: &Path,
    data: &Path,
    functions: bool,
    path: &str,
    token: &str,
) -> anyhow::Result<Started> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut command = Command::new(binary);
    command
        .env("PLATFORM__DATA_DIR", data)
        .env("PLATFORM__AUTH__HS256_SECRET", SECRET)
        .env("PLATFORM__RATE_LIMIT__ENABLED", "false")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if functions {
        command.env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string());
    } else {
        command
            .env("PLATFORM__HTTP__PORT", port.to_string())
            .env("PLATFORM__HTTP__HOST", "127.0.0.1");
    }
    let started = Instant::now();
    let mut child = command.spawn()?;
    loop {
        if get_ok(port, path, token) {
            return Ok(Started {
                child,
                port,
                ready_after: started.elapsed(),
            });
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{} exited at start: {status}", binary.display());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no 200 within 30 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn main() -> anyhow::Result<()> {
    let starts = env_number("COLD_STARTS", 20);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let profile = std::env::var("COLD_PROFILE").unwrap_or_else(|_| "release".to_owned());
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(&root)
        .args(["build", "--profile", &profile, "--quiet"]);
    for (service, _, _) in SERVICES {
        build.args(["-p", service]);
    }
    anyhow::ensure!(
        build.status()?.success(),
        "the service binaries did not build"
    );
    let settings = common::config::Settings::defaults();
    println!(
        "cold start: exec -> first authenticated 200 ({starts} starts each, {profile} build, 2 cores); resident memory"
    );
    println!(
        "{:<14} {:<15} {:>9} {:>9} {:>10} {:>12}",
        "service", "mode", "p50 ms", "p99 ms", "idle MiB", "loaded MiB"
    );
    for (service, path, scope) in SERVICES {
        let token = common::auth::mint_dev_token(
            &SecretString::from(SECRET.to_owned()),
            &settings.auth,
            "bench",
            scope,
            3600,
        )?;
        let binary = root.join("target").join(&profile).join(service);
        for functions in [false, true] {
            let data = tempfile::tempdir()?;
            // The first start makes the store's files; the ones measured find them there,
            // as an instance after the first does.
            let mut first = start(&binary, data.path(), functions, path, &token)?;
            first.child.kill()?;
            first.child.wait()?;
            let mut times = Vec::with_capacity(starts);
            let (mut idle, mut loaded) = (0.0, 0.0);
            for n in 0..starts {
                let mut started = start(&binary, data.path(), functions, path, &token)?;
                times.push(started.ready_after);
                if n == 0 {
                    std::thread::sleep(Duration::from_millis(500));
                    idle = rss_mib(started.child.id());
                    for _ in 0..2000 {
                        get_ok(started.port, path, &token);
                    }
                    loaded = rss_mib(started.child.id());
                }
                started.child.kill()?;
                started.child.wait()?;
            }
            times.sort();
            println!(
                "{:<14} {:<15} {:>9.1} {:>9.1} {:>10.1} {:>12.1}",
                service,
                if functions {
                    "custom handler"
                } else {
                    "process"
                },
                percentile(&times, 0.5),
                percentile(&times, 0.99),
                idle,
                loaded
            );
        }
    }
    Ok(())
}
