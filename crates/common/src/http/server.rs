use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_http::{HttpService, Protocol};
use actix_service::{IntoServiceFactory, ServiceFactoryExt, map_config};
use actix_web::dev::{AppConfig, fn_service};
use actix_web::middleware::{Compress, from_fn};
use actix_web::rt::net::TcpStream;
use actix_web::{App, web};

use super::connection::ProblemConnection;

use super::health::{self, ReadinessCheck};
use super::middleware::{
    LazyDocument, RequestTimeout, ServiceName, asyncapi, bound_request_time, guard_representation,
    mark_small_bodies, not_found, openapi, problem_fallback, trace_request, unmark_small_bodies,
};
use super::{json_config, path_config, query_config};
use crate::auth::{Authenticator, authenticate};
use crate::config::Settings;
use crate::rate_limit::{RateLimiter, limit_rate};

/// Everything the shared HTTP layer needs from a service.
#[derive(Clone)]
pub struct HttpContext {
    pub name: &'static str,
    pub settings: Settings,
    pub authenticator: Authenticator,
    pub readiness: Vec<Arc<dyn ReadinessCheck>>,
    pub openapi: LazyDocument,
    /// The service's events (AsyncAPI 3.0), served at `/asyncapi.json`.
    pub asyncapi: LazyDocument,
    /// Routes whose bodies are files streamed through: no size limit of `http.max_body_bytes`
    /// is theirs to apply, and their time limit is on silence, not on the whole upload.
    pub streamed_uploads: Vec<&'static str>,
    /// Where requests are counted, and what `/metrics` shows.
    pub metrics: crate::metrics::Metrics,
    /// Outbound circuit breakers, shown by `/health/ready`.
    pub breakers: crate::outbound::Breakers,
}

/// A running service: its address, and the way to stop it.
pub struct ServiceHandle {
    pub name: &'static str,
    pub addr: SocketAddr,
    serving: Serving,
    background: Option<Background>,
    /// How long each step of a stop may take before it is reported as hung.
    stop_limit: std::time::Duration,
    /// Its trigger functions, when it is an Azure Functions custom handler.
    pub triggers: Vec<crate::runtime::functions::TriggerSpec>,
}

/// Work a service runs beside its HTTP server (bus workers, outbox relays), stopped after
/// the server so that what requests committed is still published.
pub struct Background {
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Each task with what it is (`subscription orders/catalog`), named when it hangs a stop.
    pub tasks: Vec<(String, tokio::task::JoinHandle<()>)>,
}

/// Where a service's requests are served.
enum Serving {
    /// A server of its own (a service on its own, and the tests).
    Own(RunningServer),
    /// One server shared with the other services of the process ([`SharedHttp`]).
    Shared(SharedHttp),
}

/// A server running on its own task.
struct RunningServer {
    server: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    fn start(server: actix_server::Server) -> Self {
        Self {
            server: server.handle(),
            task: tokio::spawn(server),
        }
    }

    /// Stops it (letting requests in flight finish when `graceful`) and waits until it has.
    async fn stop(self, graceful: bool) -> std::io::Result<()> {
        self.server.stop(graceful).await;
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join)),
        }
    }
}

/// Adds one service's listener to a server being built.
type Listen = Box<
    dyn FnOnce(actix_server::ServerBuilder) -> std::io::Result<actix_server::ServerBuilder> + Send,
>;

/// One HTTP server for every service of a process (`platform up`): each service keeps its
/// own listener, routes and middleware, and the worker threads are shared. An idle actix
/// worker wakes several times a second (actix-http's date timer, which has no switch), so a
/// server per service made an idle platform's cost grow with the number of services.
/// Services are served from [`SharedHttp::run`] on, once all of them are added; stopping any
/// of them stops them all (a process stops as a whole).
#[derive(Clone, Default)]
pub struct SharedHttp {
    state: Arc<std::sync::Mutex<SharedState>>,
}

#[derive(Default)]
enum SharedState {
    #[default]
    Idle,
    Gathering {
        listens: Vec<Listen>,
        shutdown_timeout: u64,
    },
    Running(RunningServer),
    Stopped,
}

impl SharedHttp {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, listen: Listen, shutdown_timeout: u64) -> std::io::Result<()> {
        let mut state = self.lock()?;
        match &mut *state {
            SharedState::Idle => {
                *state = SharedState::Gathering {
                    listens: vec![listen],
                    shutdown_timeout,
                };
                Ok(())
            }
            SharedState::Gathering {
                listens,
                shutdown_timeout: longest,
            } => {
                listens.push(listen);
                *longest = (*longest).max(shutdown_timeout);
                Ok(())
            }
            SharedState::Running(_) | SharedState::Stopped => Err(std::io::Error::other(
                "the shared HTTP server already runs; services join it before it starts",
            )),
        }
    }

    fn lock(&self) -> std::io::Result<std::sync::MutexGuard<'_, SharedState>> {
        self.state
            .lock()
            .map_err(|_| std::io::Error::other("the shared HTTP server's state is poisoned"))
    }

    /// Serves every service added so far on `workers` threads (0: one per core).
    pub fn run(&self, workers: usize) -> std::io::Result<()> {
        let mut state = self.lock()?;
        let SharedState::Gathering {
            listens,
            shutdown_timeout,
        } = std::mem::take(&mut *state)
        else {
            return Err(std::io::Error::other(
                "the shared HTTP server has no service to serve, or runs already",
            ));
        };
        let mut builder = builder(shutdown_timeout, workers);
        for listen in listens {
            builder = listen(builder)?;
        }
        *state = SharedState::Running(RunningServer::start(builder.run()));
        Ok(())
    }

    /// Stops serving every service (the first call does; later ones find it stopped).
    async fn stop(&self, graceful: bool) -> std::io::Result<()> {
        let running = std::mem::replace(&mut *self.lock()?, SharedState::Stopped);
        match running {
            SharedState::Running(running) => running.stop(graceful).await,
            _ => Ok(()),
        }
    }
}

/// A server builder as every service's server is built: signals left to the caller (one
/// process may host several services).
fn builder(shutdown_timeout: u64, workers: usize) -> actix_server::ServerBuilder {
    let builder = actix_server::Server::build()
        .disable_signals()
        .backlog(1024)
        .shutdown_timeout(shutdown_timeout);
    if workers > 0 {
        builder.workers(workers)
    } else {
        builder
    }
}

/// A service's listener, and the server it is served from: its own unless a
/// [`SharedHttp`] is given.
pub struct Listener {
    pub tcp: TcpListener,
    pub shared: Option<SharedHttp>,
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self { tcp, shared: None }
    }
}

impl ServiceHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Attaches background work, stopped with the service.
    pub fn with_background(mut self, background: Background) -> Self {
        self.background = Some(background);
        self
    }

    /// How long each step of its stop may take (by default the shutdown timeout plus 20 s).
    pub fn with_stop_limit(mut self, limit: std::time::Duration) -> Self {
        self.stop_limit = limit;
        self
    }

    /// Records its trigger functions (custom-handler mode).
    pub fn with_triggers(mut self, triggers: Vec<crate::runtime::functions::TriggerSpec>) -> Self {
        self.triggers = triggers;
        self
    }

    /// Stops accepting connections and, when `graceful`, lets requests in flight finish;
    /// then stops the background work, which finishes the message in hand.
    ///
    /// Each step is bounded: one that has not finished within the service's shutdown timeout
    /// plus a margin fails the stop with `TimedOut`, naming the service and what hung, so that
    /// a stop never waits for ever.
    pub async fn stop(self, graceful: bool) -> std::io::Result<()> {
        let (name, limit) = (self.name, self.stop_limit);
        let deadline = tokio::time::Instant::now() + limit;
        let served = bounded(name, "its HTTP server", deadline, limit, async move {
            match self.serving {
                Serving::Own(running) => running.stop(graceful).await,
                Serving::Shared(host) => host.stop(graceful).await,
            }
        })
        .await
        .and_then(|served| served);
        if let Some(background) = self.background {
            let _ = background.shutdown.send(true);
            let deadline = tokio::time::Instant::now() + limit;
            for (what, task) in background.tasks {
                if let Err(ended) = bounded(name, &what, deadline, limit, task).await? {
                    tracing::error!(service = name, %ended, "{what} did not end cleanly");
                }
            }
        }
        served
    }
}

/// Awaits `step` until `deadline` (`limit` after its stop began).
async fn bounded<T>(
    service: &str,
    what: &str,
    deadline: tokio::time::Instant,
    limit: std::time::Duration,
    step: impl std::future::Future<Output = T>,
) -> std::io::Result<T> {
    tokio::time::timeout_at(deadline, step).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{service}: {what} did not stop within {limit:?}"),
        )
    })
}

/// Starts a service on `listener`: the shared middleware, health and OpenAPI routes, plus
/// whatever `configure` adds. Signals are left to the caller (one process may host several).
pub fn serve<F>(
    context: HttpContext,
    listener: impl Into<Listener>,
    configure: F,
) -> std::io::Result<ServiceHandle>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let Listener {
        tcp: listener,
        shared,
    } = listener.into();
    let addr = listener.local_addr()?;
    let settings = context.settings.clone();
    let authenticator = web::Data::new(context.authenticator.clone());
    let limiter = web::Data::new(RateLimiter::from_settings(&settings.rate_limit));
    let readiness = web::Data::new(health::Readiness {
        checks: context.readiness.clone(),
        breakers: context.breakers.clone(),
    });
    let document = web::Data::new(super::middleware::OpenApiDocument(context.openapi.clone()));
    let events_document = web::Data::new(super::middleware::AsyncApiDocument(
        context.asyncapi.clone(),
    ));
    let name = context.name;
    let metrics = context.metrics.clone();
    let max_body = settings.http.max_body_bytes;
    let request_timeout = std::time::Duration::from_secs(settings.http.request_timeout_seconds);
    let timeout = RequestTimeout {
        limit: request_timeout,
        streamed_uploads: context.streamed_uploads.clone(),
    };
    let app = move || {
        App::new()
            .app_data(ServiceName(name))
            .app_data(metrics.clone())
            .app_data(timeout.clone())
            .app_data(authenticator.clone())
            .app_data(limiter.clone())
            .app_data(readiness.clone())
            .app_data(document.clone())
            .app_data(events_document.clone())
            .app_data(json_config(max_body))
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(path_config())
            .app_data(query_config())
            .wrap(from_fn(limit_rate))
            .wrap(from_fn(authenticate))
            .wrap(from_fn(mark_small_bodies))
            .wrap(Compress::default())
            .wrap(from_fn(unmark_small_bodies))
            .wrap(from_fn(guard_representation))
            .wrap(from_fn(bound_request_time))
            .wrap(from_fn(problem_fallback))
            .wrap(from_fn(trace_request))
            .route("/health/live", web::get().to(health::live))
            .route("/health/ready", web::get().to(health::ready))
            .route("/openapi.json", web::get().to(openapi))
            .route("/asyncapi.json", web::get().to(asyncapi))
            .route("/metrics", web::get().to(super::metrics::prometheus_text))
            .configure(configure.clone())
            .default_service(web::to(not_found))
    };
    // What `HttpServer::listen` builds, with the connection wrapped so that the decoder's own
    // answers are problem+json too (`HttpServer` has no way to wrap a connection).
    let listen = move |server: actix_server::ServerBuilder| {
        let shutdown = server.graceful_shutdown_signal();
        server.listen(format!("{name}-http"), listener, move || {
            let shutdown = shutdown.clone();
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .client_request_timeout(request_timeout)
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .finish(map_config(
                    app()
                        .into_factory()
                        .map_err(|error: actix_web::Error| error.error_response()),
                    |_| AppConfig::default(),
                ));
            fn_service(|stream: TcpStream| async move {
                // Nagle's algorithm holds the tail of a large answer until the client's delayed
                // ACK (40 ms on Linux): every bulk answer paid it. actix-http would set this on
                // its own listener; this one is ours.
                let _ = stream.set_nodelay(true);
                let peer = stream.peer_addr().ok();
                Ok((ProblemConnection::new(stream), Protocol::Http1, peer))
            })
            .and_then(http)
        })
    };
    let serving = match shared {
        Some(host) => {
            host.add(Box::new(listen), settings.http.shutdown_timeout_seconds)?;
            Serving::Shared(host)
        }
        None => Serving::Own(RunningServer::start(
            listen(builder(
                settings.http.shutdown_timeout_seconds,
                settings.http.workers,
            ))?
            .run(),
        )),
    };
    tracing::info!(service = name, %addr, "listening");
    Ok(ServiceHandle {
        name,
        addr,
        serving,
        background: None,
        stop_limit: stop_limit(&settings),
        triggers: Vec::new(),
    })
}

/// A graceful stop gives requests `http.shutdown_timeout_seconds`; the margin covers closing
/// what they leave behind.
fn stop_limit(settings: &Settings) -> std::time::Duration {
    std::time::Duration::from_secs(settings.http.shutdown_timeout_seconds.saturating_add(20))
}

/// Binds `host:port` from the settings (port 0 picks a free one).
pub fn bind(settings: &Settings) -> std::io::Result<TcpListener> {
    TcpListener::bind((settings.http.host.as_str(), settings.http.port))
}
