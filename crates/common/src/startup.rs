//! What every service binary does around its start-up function.

use crate::config::Settings;
use crate::http::ServiceHandle;

/// Azure Functions runs a custom handler with the port to listen on in
/// `FUNCTIONS_CUSTOMHANDLER_PORT`; it wins over the configured port, and the service runs as
/// a custom handler (`hosting.mode = "functions"`).
pub fn adopt_functions_port(settings: &mut Settings) {
    if let Some(port) = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|port| port.parse().ok())
    {
        settings.http.port = port;
        settings.http.host = "0.0.0.0".to_owned();
        settings.hosting.mode = crate::config::HostingMode::Functions;
    }
}

/// Waits for Ctrl-C or SIGTERM, then stops every service gracefully: requests in flight
/// finish, nothing accepted is dropped.
pub async fn run_until_stopped(handles: Vec<ServiceHandle>) -> anyhow::Result<()> {
    wait_for_stop().await;
    stop_all(handles).await;
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM. From then on a second one exits at once: a stop that hangs
/// need not be waited for, since what was committed is safe and what was in flight is
/// delivered again.
pub async fn wait_for_stop() {
    shutdown_signal().await;
    tracing::info!("stopping");
    tokio::spawn(async {
        shutdown_signal().await;
        tracing::warn!("a second signal: stopping at once");
        std::process::exit(130);
    });
}

/// Stops the services in the order given. A service whose stop hangs (each step is bounded,
/// see [`ServiceHandle::stop`]) is reported by name with what hung, the others are still
/// stopped, and then the process exits with status 1: waiting on would only hang the runtime's
/// own shutdown, which waits for blocking work.
pub async fn stop_all(handles: Vec<ServiceHandle>) {
    let mut hung = false;
    for handle in handles {
        let name = handle.name;
        match handle.stop(true).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                hung = true;
                tracing::error!(service = name, %error, "the stop hung");
                eprintln!("the stop hung: {error}");
            }
            Err(error) => tracing::error!(service = name, %error, "stopped with an error"),
        }
    }
    if hung {
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `<service> healthcheck`: asks the service running beside (same settings, so the same
/// port) whether it is ready, and exits 0 if so, 1 if not. The container image has no shell
/// and no curl; its `HEALTHCHECK` runs this.
pub fn exit_if_healthcheck(settings: &Settings) {
    if std::env::args().nth(1).as_deref() != Some("healthcheck") {
        return;
    }
    let ready = probe_ready(settings.http.port, std::time::Duration::from_secs(2));
    if let Err(why) = &ready {
        eprintln!("not ready: {why}");
    }
    std::process::exit(if ready.is_ok() { 0 } else { 1 });
}

/// `GET /health/ready` on loopback: `Ok` for a 200.
pub fn probe_ready(port: u16, timeout: std::time::Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| format!("port {port}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&head[9..12]).into_owned();
    if status == "200" {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}
