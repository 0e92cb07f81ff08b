//! The orders service as its own process (container or Azure Functions custom handler).

use anyhow::Context;
use common::runtime::Launch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut settings, own) = orders::startup::load_settings()?;
    common::startup::adopt_functions_port(&mut settings);
    common::startup::exit_if_healthcheck(&settings);
    let _telemetry = common::telemetry::init(&settings.telemetry, orders::startup::SERVICE)?;
    let listener = common::http::bind(&settings).context("binding the HTTP port")?;
    let handle = orders::startup::start(settings, own, Launch::on(listener)).await?;
    common::startup::run_until_stopped(vec![handle]).await
}
