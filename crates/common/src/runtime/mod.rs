//! One runtime for every service: a service declares what it runs (containers,
//! subscriptions with the event types they take, outbox containers); the runtime opens the
//! adapters, creates the subscriptions with their filters, runs one worker per subscription
//! and one change-feed relay per outbox, serves HTTP, and stops it all on shutdown.

pub mod adapters;
pub mod asyncapi;
pub mod consumer;
pub mod dispatch;
pub mod feed;
pub mod functions;
mod measure;
mod operator;
pub mod service;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::web;

use crate::auth::Authenticator;
use crate::bus::SharedBus;
use crate::bus::outbox::{OutboxRelay, RELAY_READER};
use crate::bus::worker::spawn_worker;
use crate::config::Settings;
use crate::events::EventContract;
use crate::http::{Background, HttpContext, LazyDocument, Listener, ServiceHandle, SharedHttp};
use crate::metrics::Metrics;
use crate::outbound::Breakers;
use crate::store::SharedStore;

pub use consumer::{Commit, Effect, IdempotentConsumer};
pub use dispatch::{Dispatcher, Handles};
pub use feed::{FeedHandler, FeedReader, FeedSignal, LEASES};
pub use service::{Host, Hosted, Loaded, Service};

/// A subscription a service consumes through.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionSpec {
    pub topic: &'static str,
    /// The subscription's name on the topic (the service's name, by convention).
    pub name: &'static str,
    /// The event types it takes; the broker filters out the rest.
    pub event_types: &'static [&'static str],
    /// The broker lets in only those of `event_types` the service asks for at run time
    /// ([`crate::bus::type_rules`]), for a service whose wants change while it runs.
    pub types_by_rule: bool,
}

/// What a service is, as the platform sees it.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDescriptor {
    pub name: &'static str,
    pub default_port: u16,
    /// Its document containers (the runtime adds [`LEASES`]).
    pub containers: &'static [&'static str],
    pub subscriptions: &'static [SubscriptionSpec],
    /// Containers holding outbox entries; each gets a relay.
    pub outboxes: &'static [&'static str],
    /// The events it publishes.
    pub publishes: fn() -> Vec<EventContract>,
    /// The events it consumes, with their schemas.
    pub consumes: fn() -> Vec<EventContract>,
    /// Fields its queries filter on, beside `kind`, in containers that grow with history
    /// (see [`crate::store::DocumentStore::index_field`]).
    pub indexed_fields: &'static [&'static str],
}

impl ServiceDescriptor {
    /// Every container the service opens, leases included.
    pub fn all_containers(&self) -> Vec<&'static str> {
        let mut containers = self.containers.to_vec();
        containers.push(LEASES);
        containers
    }
}

/// Where the platform's other services answer, by service name: the addresses actually
/// bound when `platform up` hosts them, which win over configured URLs.
#[derive(Debug, Clone, Default)]
pub struct Peers(BTreeMap<String, String>);

impl Peers {
    pub fn insert(&mut self, service: &str, url: String) {
        self.0.insert(service.to_owned(), url);
    }

    pub fn url(&self, service: &str) -> Option<&str> {
        self.0.get(service).map(String::as_str)
    }
}

/// What a service is started with besides its settings.
pub struct Launch {
    /// Its listener, served by a server of its own unless shared ([`Launch::sharing`]).
    pub listener: Listener,
    pub peers: Peers,
    /// Replaces the configured bus (tests that run the services on another broker).
    pub bus: Option<SharedBus>,
}

impl Launch {
    pub fn on(listener: TcpListener) -> Self {
        Self {
            listener: listener.into(),
            peers: Peers::default(),
            bus: None,
        }
    }

    /// Served by `server` with the other services of the process, once it runs.
    pub fn sharing(mut self, server: &SharedHttp) -> Self {
        self.listener.shared = Some(server.clone());
        self
    }
}

/// A service's opened adapters and what runs beside its HTTP server.
pub struct Runtime {
    pub descriptor: &'static ServiceDescriptor,
    pub settings: Settings,
    pub store: SharedStore,
    pub bus: SharedBus,
    pub authenticator: Authenticator,
    /// Wakes the outbox relays after a commit.
    pub outbox_signal: FeedSignal,
    /// This instance, as owner of change-feed leases (`change_feed.instance_id`).
    pub instance: String,
    /// The service's meter: `/metrics`, OTLP, and the instruments every service records.
    pub metrics: Metrics,
    /// The circuit breakers its outbound clients share (shown in readiness and metrics).
    pub breakers: Breakers,
    feeds: Vec<FeedReader>,
    beside: Vec<(String, BackgroundWork)>,
    /// What timer and blob triggers run in custom-handler mode.
    ticks: Vec<(String, functions::TriggerBinding, Arc<dyn functions::Tick>)>,
    streamed_uploads: Vec<&'static str>,
}

/// Work a service runs beside its workers, started by `serve` and stopped with them: it is
/// given the shutdown signal and must return soon after it turns true.
pub type BackgroundWork =
    Box<dyn FnOnce(tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> + Send>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("subscription {topic}/{subscription} is declared but has no handlers")]
    MissingHandlers {
        topic: &'static str,
        subscription: &'static str,
    },
    #[error(
        "subscription {subscription} declares event types {declared:?} but handles {handled:?}"
    )]
    HandlerMismatch {
        subscription: &'static str,
        declared: Vec<&'static str>,
        handled: Vec<&'static str>,
    },
    #[error("handlers were given for {0}, which the service does not declare")]
    UnknownSubscription(&'static str),
}

/// This instance's name as a lease owner: configured, or `<service>@<host>`.
fn instance_id(service: &str, configured: &str) -> String {
    if !configured.trim().is_empty() {
        return configured.trim().to_owned();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{service}@{host}")
}

impl Runtime {
    /// Opens the store and the bus the settings ask for (or `bus`), and creates every
    /// declared subscription with its event-type filter.
    pub async fn open(
        descriptor: &'static ServiceDescriptor,
        settings: Settings,
        bus: Option<SharedBus>,
    ) -> anyhow::Result<Self> {
        let metrics = Metrics::new(descriptor.name, &settings.telemetry)?;
        let store =
            adapters::open_store(&settings, descriptor.name, &descriptor.all_containers()).await?;
        for field in descriptor.indexed_fields {
            store.index_field(field).await?;
        }
        let store = adapters::measured_store(store, &settings, &metrics);
        let bus = match bus {
            Some(bus) => bus,
            None => adapters::open_bus(&settings)?,
        };
        for subscription in descriptor.subscriptions {
            // Every declared type, even where type rules are to say which: until the service
            // has added its rules ([`Runtime::keep_to_type_rules`]), nothing it wants is lost.
            bus.ensure_subscription(
                subscription.topic,
                subscription.name,
                adapters::subscription_options(&settings).for_event_types(subscription.event_types),
            )
            .await?;
        }
        let authenticator = adapters::authenticator(&settings)?;
        let instance = instance_id(descriptor.name, &settings.change_feed.instance_id);
        let outbox_signal = FeedSignal::default();
        let breakers = Breakers::new(
            settings.outbound.breaker_failures,
            std::time::Duration::from_millis(settings.outbound.breaker_open_ms),
        );
        measure::runtime_gauges(&metrics, descriptor, &bus, &outbox_signal, &breakers);
        Ok(Self {
            descriptor,
            settings,
            store,
            bus,
            authenticator,
            outbox_signal,
            instance,
            metrics,
            breakers,
            feeds: Vec::new(),
            beside: Vec::new(),
            ticks: Vec::new(),
            streamed_uploads: Vec::new(),
        })
    }

    /// Narrows each subscription made `types_by_rule` to its type rules: call once the
    /// service has added the rules for what it wants now.
    pub fn keep_to_type_rules(
        &self,
    ) -> impl Future<Output = Result<(), crate::bus::BusError>> + Send + 'static {
        let (subscriptions, bus) = (self.descriptor.subscriptions, self.bus.clone());
        let options = adapters::subscription_options(&self.settings).with_type_rules();
        async move {
            for subscription in subscriptions.iter().filter(|s| s.types_by_rule) {
                bus.ensure_subscription(subscription.topic, subscription.name, options.clone())
                    .await?;
            }
            Ok(())
        }
    }

    /// The idempotent-consumer helper over this service's store.
    pub fn consumer(&self) -> IdempotentConsumer {
        IdempotentConsumer::new(
            self.store.clone(),
            self.outbox_signal.clone(),
            self.settings.bus.processed_retention_seconds,
        )
    }

    /// A change-feed reader of `container` under this instance's leases.
    pub fn feed_reader(
        &self,
        container: &'static str,
        reader: &'static str,
        signal: FeedSignal,
        handler: Arc<dyn FeedHandler>,
    ) -> FeedReader {
        FeedReader {
            store: self.store.clone(),
            container,
            reader,
            owner: self.instance.clone(),
            settings: self.settings.change_feed.clone(),
            signal,
            handler,
        }
    }

    /// Runs `reader` beside the service (a view, say); it stops with the service.
    pub fn follow(&mut self, reader: FeedReader) {
        self.feeds.push(reader);
    }

    /// Runs `work` beside the workers once the service serves, stopped with them; `what` names
    /// it (`the retention purge`) when it hangs a stop.
    pub fn run_beside(&mut self, what: &str, work: BackgroundWork) {
        self.beside.push((what.to_owned(), work));
    }

    /// In custom-handler mode, runs `tick` on a timer (`schedule`: NCRONTAB, six fields) as
    /// function `fn-timer-<name>`; a process runs the same work in its own loops.
    pub fn on_timer(&mut self, name: &str, schedule: &str, tick: Arc<dyn functions::Tick>) {
        let schedule = schedule.to_owned();
        let binding = functions::TriggerBinding::Timer { schedule };
        self.ticks
            .push((format!("{}timer-{name}", functions::PREFIX), binding, tick));
    }

    /// In custom-handler mode, runs `tick` when a blob is written under `path`
    /// (`<container>/<prefix>{name}`) as function `fn-blob-<name>`.
    pub fn on_blob(&mut self, name: &str, path: &str, tick: Arc<dyn functions::Tick>) {
        let path = path.to_owned();
        let binding = functions::TriggerBinding::Blob { path };
        self.ticks
            .push((format!("{}blob-{name}", functions::PREFIX), binding, tick));
    }

    /// Whether the service is an Azure Functions custom handler (no loops of its own).
    pub fn is_custom_handler(&self) -> bool {
        self.settings.hosting.mode == crate::config::HostingMode::Functions
    }

    /// Declares routes whose request bodies are files streamed through (see
    /// [`HttpContext::streamed_uploads`]).
    pub fn stream_uploads_on(&mut self, paths: &[&'static str]) {
        self.streamed_uploads.extend_from_slice(paths);
    }

    /// Starts the workers (one per declared subscription, each with its dispatcher), the
    /// outbox relays and any other feed readers, and serves HTTP on `listener`.
    pub fn serve<F>(
        self,
        handlers: Vec<(&'static str, Dispatcher)>,
        listener: impl Into<Listener>,
        openapi: fn() -> serde_json::Value,
        configure: F,
    ) -> anyhow::Result<ServiceHandle>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let workers = self.match_handlers(handlers)?;
        let (bus, descriptor) = (self.bus.clone(), self.descriptor);
        let configure = move |config: &mut web::ServiceConfig| {
            operator::configure(config, bus.clone(), descriptor);
            configure(config);
        };
        if self.is_custom_handler() {
            return self.serve_functions(workers, listener, openapi, configure);
        }
        let (shutdown, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for (subscription, dispatcher) in workers {
            let what = format!(
                "the worker of subscription {}/{}",
                subscription.topic, subscription.name
            );
            tasks.push((
                what,
                spawn_worker(
                    self.bus.clone(),
                    adapters::worker_settings(
                        &self.settings,
                        subscription.topic,
                        subscription.name,
                    ),
                    measure::measured(&self.metrics, &subscription, dispatcher),
                    stopped.clone(),
                ),
            ));
        }
        if let Some(work) = measure::sample_probes_while_pushing(&self.metrics, &self.settings) {
            tasks.push(("the probe sampler".to_owned(), work(stopped.clone())));
        }
        for container in self.descriptor.outboxes {
            let relay = OutboxRelay::new(self.store.clone(), self.bus.clone(), container);
            let reader =
                self.feed_reader(container, RELAY_READER, self.outbox_signal.clone(), relay);
            let what = format!("the outbox relay of {container}");
            tasks.push((what, reader.spawn(stopped.clone())));
        }
        let context = self.http_context(openapi);
        for reader in self.feeds {
            let what = format!(
                "the change-feed reader {}.{}",
                reader.container, reader.reader
            );
            tasks.push((what, reader.spawn(stopped.clone())));
        }
        for (what, work) in self.beside {
            tasks.push((what, work(stopped.clone())));
        }
        let handle = crate::http::serve(context, listener, configure)?;
        Ok(handle.with_background(Background { shutdown, tasks }))
    }

    /// As an Azure Functions custom handler: every worker and change-feed reader becomes a
    /// trigger function, and nothing runs in the background.
    fn serve_functions<F>(
        self,
        workers: Vec<(SubscriptionSpec, Dispatcher)>,
        listener: impl Into<Listener>,
        openapi: fn() -> serde_json::Value,
        configure: F,
    ) -> anyhow::Result<ServiceHandle>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let mut triggers = functions::Triggers::default();
        for (subscription, dispatcher) in workers {
            let handler = measure::measured(&self.metrics, &subscription, dispatcher);
            triggers.bus(subscription.topic, subscription.name, handler);
        }
        for container in self.descriptor.outboxes {
            let relay = OutboxRelay::new(self.store.clone(), self.bus.clone(), container);
            triggers.feed(container, RELAY_READER, relay);
        }
        for reader in &self.feeds {
            triggers.feed(reader.container, reader.reader, reader.handler.clone());
        }
        for (function, binding, tick) in &self.ticks {
            triggers.tick(function.clone(), binding.clone(), tick.clone());
        }
        let context = self.http_context(openapi);
        let specs = triggers.specs();
        let handle = crate::http::serve(context, listener, move |config| {
            triggers.configure(config);
            configure(config);
        })?;
        Ok(handle.with_triggers(specs))
    }

    /// Pairs each declared subscription with its dispatcher, which must handle exactly the
    /// declared event types.
    fn match_handlers(
        &self,
        mut handlers: Vec<(&'static str, Dispatcher)>,
    ) -> Result<Vec<(SubscriptionSpec, Dispatcher)>, RuntimeError> {
        let mut paired = Vec::new();
        for subscription in self.descriptor.subscriptions {
            let index = handlers
                .iter()
                .position(|(name, _)| *name == subscription.name)
                .ok_or(RuntimeError::MissingHandlers {
                    topic: subscription.topic,
                    subscription: subscription.name,
                })?;
            let (_, dispatcher) = handlers.swap_remove(index);
            let mut declared = subscription.event_types.to_vec();
            declared.sort_unstable();
            if dispatcher.event_types() != declared {
                return Err(RuntimeError::HandlerMismatch {
                    subscription: subscription.name,
                    declared,
                    handled: dispatcher.event_types(),
                });
            }
            paired.push((*subscription, dispatcher));
        }
        if let Some((name, _)) = handlers.first() {
            return Err(RuntimeError::UnknownSubscription(name));
        }
        Ok(paired)
    }

    fn http_context(&self, openapi: fn() -> serde_json::Value) -> HttpContext {
        HttpContext {
            name: self.descriptor.name,
            settings: self.settings.clone(),
            authenticator: self.authenticator.clone(),
            readiness: vec![
                Arc::new(crate::http::StoreReadiness(self.store.clone())),
                Arc::new(crate::http::BusReadiness(self.bus.clone())),
            ],
            openapi: LazyDocument::new(move || crate::http::complete_openapi(openapi())),
            asyncapi: {
                let descriptor = self.descriptor;
                LazyDocument::new(move || asyncapi::document(descriptor))
            },
            streamed_uploads: self.streamed_uploads.clone(),
            metrics: self.metrics.clone(),
            breakers: self.breakers.clone(),
        }
    }
}
