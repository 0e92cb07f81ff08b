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
    shutdown_signal().await;
    tracing::info!("stopping");
    for handle in handles {
        let name = handle.name;
        if let Err(error) = handle.stop(true).await {
            tracing::error!(service = name, %error, "stopped with an error");
        }
    }
    Ok(())
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
