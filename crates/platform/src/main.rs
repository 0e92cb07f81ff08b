//! `platform`: run every service on one machine, and mint development tokens.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::config::{AuthMode, Settings, Sources};

#[derive(Parser)]
#[command(
    name = "platform",
    version,
    about = "The integration platform on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in this process on the embedded store (Ctrl-C stops cleanly).
    Up {
        /// Data folder for every service (default `./.data`, or `PLATFORM__DATA_DIR`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print a signed development token that the running services accept.
    Token {
        /// The token's subject (who is calling).
        #[arg(long)]
        sub: String,
        /// Space-separated scopes, e.g. "catalog.read catalog.write".
        #[arg(long, default_value = "")]
        scope: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Data folder holding the development secret (as for `up`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up { data_dir } => up(data_dir).await,
        Command::Token {
            sub,
            scope,
            ttl,
            data_dir,
        } => token(&sub, &scope, ttl, data_dir),
    }
}

async fn up(data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut catalog_settings = catalog::startup::load_settings()?;
    if let Some(dir) = &data_dir {
        catalog_settings.data_dir = dir.clone();
    }
    let _telemetry = common::telemetry::init(&catalog_settings.telemetry, "platform")?;
    let data = catalog_settings.data_dir.clone();
    let catalog_listener = common::http::bind(&catalog_settings)
        .with_context(|| format!("catalog: binding port {}", catalog_settings.http.port))?;
    let catalog = catalog::startup::start(catalog_settings, catalog_listener).await?;

    let exe = "cargo run --release -p platform --";
    let data_flag = data_dir
        .as_ref()
        .map(|dir| format!(" --data-dir {}", dir.display()))
        .unwrap_or_default();
    println!("platform is up (data in {})", data.display());
    println!(
        "  catalog        {}   (OpenAPI: {}/openapi.json)",
        catalog.url(),
        catalog.url()
    );
    println!();
    println!("get a token:");
    println!("  TOKEN=$({exe} token --sub me --scope \"catalog.read catalog.write\"{data_flag})");
    println!(
        "  curl -H \"Authorization: Bearer $TOKEN\" {}/v2/products",
        catalog.url()
    );
    println!();
    println!("Ctrl-C stops every service cleanly.");
    common::startup::run_until_stopped(vec![catalog]).await
}

fn token(sub: &str, scope: &str, ttl: u64, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut settings = Settings::load("platform", &Sources::standard(&[]))?;
    if let Some(dir) = data_dir {
        settings.data_dir = dir;
    }
    anyhow::ensure!(
        settings.auth.mode == AuthMode::Hs256,
        "auth.mode is \"oidc\": get tokens from your identity provider"
    );
    let secret = match &settings.auth.hs256_secret {
        Some(secret) => secret.clone(),
        None => common::auth::load_or_create_dev_secret(&settings.data_dir)?,
    };
    let token = common::auth::mint_dev_token(&secret, &settings.auth, sub, scope, ttl)?;
    println!("{token}");
    Ok(())
}
