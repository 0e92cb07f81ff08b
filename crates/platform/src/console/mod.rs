//! The operations console: server-rendered pages over the services' own APIs, called with
//! an operator's token (scope `platform.operator`). `platform up` serves it beside the
//! services; `platform console` serves it for services anywhere (a deployment on Azure)
//! given their URLs.
//!
//! It keeps nothing but a short history of the order counts it sampled; every page is the
//! services' answer of the moment. Forms post back to the console, which calls the service
//! and redirects (a refresh never repeats an action).

mod pages;
mod services;

use std::collections::{BTreeMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

pub use services::{Services, TokenSource};

/// Order statuses the console counts, in the saga's order.
pub const ORDER_STATUSES: [&str; 4] = ["pending", "confirmed", "rejected", "cancelled"];

/// How many samples of the order counts are kept (an hour at the default interval).
const HISTORY: usize = 360;

/// One sample of the order counts: when (Unix seconds) and, per status, how many (capped).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CountSample {
    pub at: i64,
    pub counts: BTreeMap<String, u64>,
}

pub struct Console {
    services: Services,
    history: Mutex<VecDeque<CountSample>>,
    templates: minijinja::Environment<'static>,
}

/// What the console needs to start.
pub struct ConsoleOptions {
    pub services: Services,
    /// How often the order counts are sampled.
    pub sample_every: Duration,
}

/// A running console: its address and the way to stop it.
pub struct ConsoleHandle {
    pub url: String,
    server: ServerHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ConsoleHandle {
    /// Stops serving (pages in flight finish, within the server's shutdown timeout) and
    /// sampling.
    pub async fn stop(self) {
        self.server.stop(true).await;
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Serves the console on `listener`.
pub fn serve(listener: TcpListener, options: ConsoleOptions) -> anyhow::Result<ConsoleHandle> {
    let address = listener.local_addr()?;
    let console = web::Data::new(Console {
        services: options.services,
        history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        templates: pages::templates()?,
    });
    let sampled = console.clone().into_inner();
    let sampler = tokio::spawn(sample_order_counts(sampled, options.sample_every));
    let data = console.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(actix_web::middleware::from_fn(pages::same_origin_posts))
            .configure(pages::routes)
    })
    .workers(1)
    .shutdown_timeout(5)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    let served = tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the console stopped");
        }
    });
    Ok(ConsoleHandle {
        url: format!("http://{address}"),
        server: handle,
        tasks: vec![sampler, served],
    })
}

async fn sample_order_counts(console: Arc<Console>, every: Duration) {
    loop {
        if let Some(counts) = console.services.order_counts().await {
            let sample = CountSample {
                at: time::OffsetDateTime::now_utc().unix_timestamp(),
                counts,
            };
            if let Ok(mut history) = console.history.lock() {
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(sample);
            }
        }
        tokio::time::sleep(every).await;
    }
}
