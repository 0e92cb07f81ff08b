//! `platform`: run every service on one machine, and mint development tokens.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::config::{AuthMode, Settings, Sources};
use common::http::ServiceHandle;

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
        /// Start only these services (comma separated, e.g. `catalog,orders`); the others
        /// are reached at their configured URLs.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The operations console's port on loopback (0: no console).
        #[arg(long, default_value_t = 8080)]
        console_port: u16,
    },
    /// Serve the operations console for services anywhere (a deployment on Azure, say).
    Console {
        /// A service and its base URL, e.g. `orders=https://myprefix-orders.azurewebsites.net`
        /// (repeat for each service).
        #[arg(long = "service", value_parser = parse_service, required = true)]
        services: Vec<(String, String)>,
        /// An operator's token (scope `platform.operator`).
        #[arg(long, env = "PLATFORM_TOKEN", hide_env_values = true)]
        token: String,
        /// Port on loopback.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Show or resubmit dead-lettered messages of the embedded bus.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
        /// Data folder holding the bus (as for `up`).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Read models kept from the change feed (CQRS views).
    Views {
        #[command(subcommand)]
        action: ViewsAction,
        /// Data folder holding the service's store (as for `up`).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Write an Azure Functions app folder per service (host.json, a function.json per HTTP
    /// path and per trigger), to which `deploy/functions/package.sh` adds the binary.
    Functions {
        /// Where the folders go (one per service).
        #[arg(long, default_value = "deploy/functions")]
        out: PathBuf,
        /// Only these services (comma separated; default: all).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Upload a product feed (.csv, .jsonl) to sync and follow its import until it ends;
    /// exits non-zero when rows failed.
    Import {
        /// The feed file.
        file: PathBuf,
        /// The sync service (default: where `platform up` runs it, from its settings).
        #[arg(long)]
        url: Option<String>,
        /// A bearer token with `sync.admin` (default: one minted from the development
        /// secret in the data folder).
        #[arg(long, env = "PLATFORM_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Data folder holding the development secret (as for `up`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// No progress bar (for scripts and logs).
        #[arg(long)]
        quiet: bool,
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

#[derive(Subcommand)]
enum ViewsAction {
    /// Build a service's views again from their sources (the service may keep running).
    Rebuild {
        /// The service whose views to rebuild (`catalog`).
        service: String,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// List dead-lettered messages (every subscription unless one is named).
    List {
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        subscription: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send dead-lettered messages back to their subscription.
    Replay {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        subscription: String,
        /// The message (event) id; or --all.
        #[arg(long, required_unless_present = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Remove a dead-lettered message for good (it will not be handled).
    Discard {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        subscription: String,
        /// The message (event) id.
        #[arg(long)]
        id: String,
    },
}

/// Every subscription of the platform's services, from the registry.
fn subscriptions() -> Vec<(&'static str, &'static str)> {
    platform::registry::descriptors()
        .into_iter()
        .flat_map(|d| d.subscriptions.iter().map(|s| (s.topic, s.name)))
        .collect()
}

/// The configuration sources of the command, with `--data-dir` over everything.
fn sources(data_dir: Option<&PathBuf>) -> Sources {
    let sources = Sources::standard(&[]);
    match data_dir {
        Some(dir) => sources.with_override("data_dir", dir.display().to_string()),
        None => sources,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up {
            data_dir,
            only,
            console_port,
        } => up(data_dir, only, console_port).await,
        Command::Console {
            services,
            token,
            port,
        } => console(services, token, port).await,
        Command::Token {
            sub,
            scope,
            ttl,
            data_dir,
        } => token(&sub, &scope, ttl, data_dir),
        Command::Dlq { action, data_dir } => dlq(action, data_dir).await,
        Command::Views { action, data_dir } => views(action, data_dir).await,
        Command::Functions { out, only } => {
            for folder in platform::functions::write_apps(&out, &only).await? {
                println!("{}", folder.display());
            }
            Ok(())
        }
        Command::Import {
            file,
            url,
            token,
            data_dir,
            quiet,
        } => import(&file, url, token, data_dir, quiet).await,
    }
}

async fn import(
    file: &std::path::Path,
    url: Option<String>,
    token: Option<String>,
    data_dir: Option<PathBuf>,
    quiet: bool,
) -> anyhow::Result<()> {
    let hosted = platform::registry::select(&["sync".to_owned()])?;
    let mut loaded = platform::registry::load(&hosted, &sources(data_dir.as_ref()))?;
    let settings = loaded
        .first_mut()
        .context("sync is not known")?
        .settings()
        .clone();
    let url = url.unwrap_or_else(|| {
        let host = match settings.http.host.as_str() {
            "0.0.0.0" | "::" => "127.0.0.1",
            host => host,
        };
        format!("http://{host}:{}", settings.http.port)
    });
    let token = match token {
        Some(token) => token,
        None => {
            anyhow::ensure!(
                settings.auth.mode == AuthMode::Hs256,
                "auth.mode is \"oidc\": pass --token (or PLATFORM_TOKEN) with sync.admin"
            );
            let secret = match &settings.auth.hs256_secret {
                Some(secret) => secret.clone(),
                None => common::auth::load_or_create_dev_secret(&settings.data_dir)?,
            };
            common::auth::mint_dev_token(
                &secret,
                &settings.auth,
                "platform-import",
                "sync.admin",
                3600,
            )?
        }
    };
    let target = platform::import::Target { url, token };
    let job = platform::import::run(&target, file, !quiet).await?;
    let (summary, clean) = platform::import::summary(&job);
    println!("{summary}");
    anyhow::ensure!(clean, "the import did not take every row");
    Ok(())
}

fn parse_service(text: &str) -> Result<(String, String), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| "expected NAME=URL".to_owned())?;
    if !["catalog", "orders", "sync", "notifications"].contains(&name) {
        return Err(format!("{name} is not a service of the platform"));
    }
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!("{url} is not an http(s) URL"));
    }
    Ok((name.to_owned(), url.to_owned()))
}

async fn console(services: Vec<(String, String)>, token: String, port: u16) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding the console to 127.0.0.1:{port}"))?;
    let services = platform::console::Services::new(
        services.into_iter().collect(),
        platform::console::TokenSource::Fixed(token),
    )?;
    let console = platform::console::serve(
        listener,
        platform::console::ConsoleOptions {
            services,
            sample_every: std::time::Duration::from_secs(10),
        },
    )?;
    println!("console: {}", console.url);
    tokio::signal::ctrl_c().await?;
    console.stop().await;
    Ok(())
}

/// The console beside the services `platform up` started, with tokens minted from the
/// development secret; none (said, not fatal) when the port is taken.
fn start_console(
    port: u16,
    handles: &[ServiceHandle],
    settings: &Settings,
) -> anyhow::Result<Option<platform::console::ConsoleHandle>> {
    if port == 0 {
        return Ok(None);
    }
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("no console: 127.0.0.1:{port} is not free ({error}); pass --console-port");
            return Ok(None);
        }
    };
    let secret = match &settings.auth.hs256_secret {
        Some(secret) => secret.clone(),
        None => common::auth::load_or_create_dev_secret(&settings.data_dir)?,
    };
    let urls = handles
        .iter()
        .map(|handle| (handle.name.to_owned(), handle.url()))
        .collect();
    let services = platform::console::Services::new(
        urls,
        platform::console::TokenSource::Development {
            secret,
            auth: settings.auth.clone(),
        },
    )?;
    Ok(Some(platform::console::serve(
        listener,
        platform::console::ConsoleOptions {
            services,
            sample_every: std::time::Duration::from_secs(10),
        },
    )?))
}

async fn up(data_dir: Option<PathBuf>, only: Vec<String>, console_port: u16) -> anyhow::Result<()> {
    let selected = platform::registry::select(&only)?;
    let mut loaded = platform::registry::load(&selected, &sources(data_dir.as_ref()))?;
    let first = loaded
        .first_mut()
        .context("no service selected")?
        .settings()
        .clone();
    let _telemetry = common::telemetry::init(&first.telemetry, "platform")?;
    let data = first.data_dir.clone();
    // One secret for every service: made now, before they race to create it.
    common::auth::load_or_create_dev_secret(&data)?;
    let handles = platform::registry::start(loaded, None).await?;

    let exe = "cargo run --release -p platform --";
    let data_flag = data_dir
        .as_ref()
        .map(|dir| format!(" --data-dir {}", dir.display()))
        .unwrap_or_default();
    println!("platform is up (data in {})", data.display());
    for service in &handles {
        println!(
            "  {:<14} {}   (OpenAPI: {}/openapi.json, events: {}/asyncapi.json)",
            service.name,
            service.url(),
            service.url(),
            service.url()
        );
    }
    println!();
    println!("get a token:");
    println!(
        "  TOKEN=$({exe} token --sub me --scope \"catalog.read catalog.write orders.read orders.write sync.admin notifications.admin\"{data_flag})"
    );
    if let Some(catalog) = handles.iter().find(|h| h.name == "catalog") {
        println!(
            "  curl -H \"Authorization: Bearer $TOKEN\" {}/v2/products",
            catalog.url()
        );
    }
    if handles.iter().any(|h| h.name == "sync") {
        println!();
        println!("import a product feed (CSV with a header row, or JSON Lines):");
        println!("  {exe} import feed.csv{data_flag}");
        println!(
            "  or drop it into {}",
            data.join("sync-files").join("incoming").display()
        );
    }
    if let Some(notifications) = handles.iter().find(|h| h.name == "notifications") {
        println!();
        println!("receive events as signed webhooks (Standard Webhooks):");
        println!(
            "  curl -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' \\\n    -d '{{\"url\": \"https://example.com/hook\", \"eventTypes\": [\"orders.*\"]}}' {}/v1/subscriptions",
            notifications.url()
        );
        println!(
            "  e-mails to orders' contactEmail are written to {}",
            data.join("notifications-mail").display()
        );
    }
    let console = if first.auth.mode == AuthMode::Hs256 {
        start_console(console_port, &handles, &first)?
    } else {
        None
    };
    if let Some(console) = &console {
        println!();
        println!("operations console: {}", console.url);
    }
    println!();
    println!("Ctrl-C stops every service cleanly; a second Ctrl-C stops at once.");
    // Last started first, so that nothing new reaches a service that already stopped.
    let mut handles = handles;
    handles.reverse();
    common::startup::wait_for_stop().await;
    // The console first: it only reads the services.
    if let Some(console) = console {
        console.stop().await;
    }
    common::startup::stop_all(handles).await;
    Ok(())
}

async fn views(action: ViewsAction, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let ViewsAction::Rebuild { service } = action;
    let hosted = platform::registry::select(std::slice::from_ref(&service))?;
    let mut loaded = platform::registry::load(&hosted, &sources(data_dir.as_ref()))?;
    let loaded = loaded.first_mut().context("no service selected")?;
    let descriptor = loaded.descriptor();
    let settings = loaded.settings().clone();
    let store = common::runtime::adapters::open_store(
        &settings,
        descriptor.name,
        &descriptor.all_containers(),
    )
    .await?;
    match descriptor.name {
        "catalog" => {
            let started = std::time::Instant::now();
            let views = catalog::views::ProductViews::new(store, Default::default());
            let report = views
                .rebuild(|done| eprintln!("  {done} SKUs refreshed"))
                .await?;
            println!(
                "product-views rebuilt: {} SKUs looked at, {} views, in {:.1} s",
                report.skus,
                report.views,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        other => anyhow::bail!("{other} keeps no views"),
    }
}

async fn dlq(action: DlqAction, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load("platform", &sources(data_dir.as_ref()))?;
    let bus = common::runtime::adapters::open_bus(&settings)?;
    match action {
        DlqAction::List {
            topic,
            subscription,
            limit,
        } => {
            let mut total = 0;
            for (known_topic, known_subscription) in subscriptions() {
                if topic.as_deref().is_some_and(|t| t != known_topic)
                    || subscription
                        .as_deref()
                        .is_some_and(|s| s != known_subscription)
                {
                    continue;
                }
                let letters = match bus
                    .dead_letters(known_topic, known_subscription, limit)
                    .await
                {
                    Ok(letters) => letters,
                    Err(common::bus::BusError::UnknownSubscription { .. }) => continue,
                    Err(other) => return Err(other.into()),
                };
                for letter in letters {
                    total += 1;
                    let line = serde_json::json!({
                        "topic": known_topic,
                        "subscription": known_subscription,
                        "id": letter.message.event.id,
                        "type": letter.message.event.event_type,
                        "subject": letter.message.event.subject,
                        "reason": letter.reason,
                        "description": letter.description,
                        "deliveryCount": letter.delivery_count,
                        "data": letter.message.event.data,
                    });
                    println!("{line}");
                }
            }
            eprintln!("{total} dead-lettered message(s)");
        }
        DlqAction::Replay {
            topic,
            subscription,
            id,
            all,
        } => {
            let ids: Vec<String> = if all {
                bus.dead_letters(&topic, &subscription, usize::MAX)
                    .await?
                    .into_iter()
                    .map(|letter| letter.message.event.id)
                    .collect()
            } else {
                id.into_iter().collect()
            };
            let mut replayed = 0;
            for id in &ids {
                if bus.replay(&topic, &subscription, id).await? {
                    replayed += 1;
                } else {
                    eprintln!("{id}: not in the dead-letter queue of {topic}/{subscription}");
                }
            }
            println!("replayed {replayed} of {} message(s)", ids.len());
            anyhow::ensure!(replayed == ids.len(), "some messages were not replayed");
        }
        DlqAction::Discard {
            topic,
            subscription,
            id,
        } => {
            anyhow::ensure!(
                bus.discard(&topic, &subscription, &id).await?,
                "{id}: not in the dead-letter queue of {topic}/{subscription}"
            );
            println!("discarded {id}");
        }
    }
    Ok(())
}

fn token(sub: &str, scope: &str, ttl: u64, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load("platform", &sources(data_dir.as_ref()))?;
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
