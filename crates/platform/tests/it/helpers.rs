use std::time::{Duration, Instant};

use common::config::{Settings, Sources};
use common::http::ServiceHandle;
use reqwest::Response;
use secrecy::SecretString;
use serde_json::{Value, json};

pub const SECRET: &str = "e2e-tests-secret-0123456789abcdef0123";
pub const ALL: &str =
    "catalog.read catalog.write orders.read orders.write sync.admin notifications.admin";

/// What every test sets on every service it starts.
pub fn test_settings(settings: &mut Settings) {
    settings.http.workers = 1;
    settings.auth.hs256_secret = Some(SecretString::from(SECRET.to_owned()));
    settings.rate_limit.enabled = false;
    settings.bus.poll_interval_ms = 50;
    settings.bus.retry_backoff_ms = vec![20, 50];
}

pub fn token(settings: &Settings) -> String {
    common::auth::mint_dev_token(
        &SecretString::from(SECRET.to_owned()),
        &settings.auth,
        "e2e",
        ALL,
        3600,
    )
    .unwrap()
}

/// Services of the registry in this process, on random ports, sharing one data folder,
/// started the way `platform up` starts them.
pub struct Platform {
    pub catalog_url: String,
    pub orders_url: String,
    pub sync_url: String,
    pub notifications_url: String,
    pub http: reqwest::Client,
    pub token: String,
    pub settings: Settings,
    handles: Vec<ServiceHandle>,
    /// A subscription on every topic the services publish to, taking every event, so that
    /// each one can be checked against its schema when the platform stops.
    tap: (common::bus::SharedBus, Vec<&'static str>),
    pub dir: tempfile::TempDir,
}

/// The subscription that sees every published event.
const TAP: &str = "contract-check";

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl Fn(&mut Settings)) -> Self {
        Self::start_on_bus(tweak, None).await
    }

    /// Every service on `bus` instead of the embedded one.
    pub async fn start_on_bus(
        tweak: impl Fn(&mut Settings),
        bus: Option<common::bus::SharedBus>,
    ) -> Self {
        Self::launch(&[], &[], tweak, bus).await
    }

    /// The services named in `only` (all when empty), with configuration `overrides`
    /// (keys as in the services' TOML files).
    pub async fn launch(
        only: &[&str],
        overrides: &[(&str, String)],
        tweak: impl Fn(&mut Settings),
        bus: Option<common::bus::SharedBus>,
    ) -> Self {
        common::telemetry::init_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let mut sources = Sources::defaults_only()
            .with_override("data_dir", dir.path().display().to_string())
            .with_override("http.port", "0");
        for (key, value) in overrides {
            sources = sources.with_override(key, value.clone());
        }
        let only: Vec<String> = only.iter().map(|s| (*s).to_owned()).collect();
        let selected = platform::registry::select(&only).unwrap();
        let mut loaded = platform::registry::load(&selected, &sources).unwrap();
        for service in &mut loaded {
            test_settings(service.settings());
            tweak(service.settings());
        }
        let settings = loaded[0].settings().clone();
        let tap_bus = match &bus {
            Some(bus) => bus.clone(),
            None => common::runtime::adapters::open_bus(&settings).unwrap(),
        };
        let mut topics: Vec<&'static str> = platform::registry::descriptors()
            .iter()
            .flat_map(|d| (d.publishes)().into_iter().map(|c| c.topic))
            .collect();
        topics.sort_unstable();
        topics.dedup();
        for topic in &topics {
            tap_bus
                .ensure_subscription(topic, TAP, Default::default())
                .await
                .unwrap();
        }
        let handles = platform::registry::start(loaded, bus).await.unwrap();
        let url = |name: &str| platform::registry::url(&handles, name).unwrap_or_default();
        Self {
            catalog_url: url("catalog"),
            orders_url: url("orders"),
            sync_url: url("sync"),
            notifications_url: url("notifications"),
            http: reqwest::Client::new(),
            token: token(&settings),
            settings,
            handles,
            tap: (tap_bus, topics),
            dir,
        }
    }

    /// The base URL of a service started here.
    pub fn url_of(&self, name: &str) -> String {
        platform::registry::url(&self.handles, name).unwrap_or_default()
    }

    /// Each service's trigger functions (custom-handler mode), with its base URL.
    pub fn triggers(&self) -> Vec<(String, common::runtime::functions::TriggerSpec)> {
        self.handles
            .iter()
            .flat_map(|handle| {
                handle
                    .triggers
                    .iter()
                    .map(move |spec| (handle.url(), spec.clone()))
            })
            .collect()
    }

    /// Every event published so far, each checked against the JSON Schema of its type;
    /// returns the types seen.
    pub async fn published_events_match_their_schemas(&self) -> std::collections::BTreeSet<String> {
        let (bus, topics) = &self.tap;
        let mut seen = std::collections::BTreeSet::new();
        let mut violations = Vec::new();
        for topic in topics {
            loop {
                let deliveries = bus.receive(topic, TAP, 100).await.unwrap();
                if deliveries.is_empty() {
                    break;
                }
                for delivery in deliveries {
                    bus.complete(topic, TAP, &delivery.lock).await.unwrap();
                    // Events a test itself injects (poison, say) are not the services'.
                    let source = delivery.message.event.source.trim_start_matches('/');
                    if !platform::registry::descriptors()
                        .iter()
                        .any(|d| d.name == source)
                    {
                        continue;
                    }
                    let event = serde_json::to_value(&delivery.message.event).unwrap();
                    let event_type = delivery.message.event.event_type.clone();
                    match common::events::contract(&event_type) {
                        None => violations.push(format!("{event_type}: no contract")),
                        Some(contract) => {
                            let validator = jsonschema::options()
                                .should_validate_formats(true)
                                .build(&contract.envelope_schema())
                                .unwrap();
                            for error in validator.iter_errors(&event) {
                                violations.push(format!(
                                    "{event_type}: {error} at {}",
                                    error.instance_path()
                                ));
                            }
                        }
                    }
                    seen.insert(event_type);
                }
            }
        }
        assert!(
            violations.is_empty(),
            "events break their schemas: {violations:#?}"
        );
        seen
    }

    /// Stops every service (their relays drain their outboxes), then checks every event
    /// they published against its schema; returns the event types seen.
    pub async fn stop(self) -> std::collections::BTreeSet<String> {
        for handle in self.handles.into_iter().rev() {
            handle.stop(true).await.unwrap();
        }
        let platform = Self {
            handles: Vec::new(),
            ..self
        };
        platform.published_events_match_their_schemas().await
    }

    pub async fn product(&self, sku: &str, amount: &str, on_hand: i64) {
        let created = self
            .http
            .post(format!("{}/v2/products", self.catalog_url))
            .bearer_auth(&self.token)
            .json(&json!({"sku": sku, "name": sku, "category": "e2e", "price": {"amount": amount, "currency": "EUR"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        self.count(sku, on_hand).await;
    }

    pub async fn count(&self, sku: &str, on_hand: i64) {
        let counted = self
            .http
            .put(format!("{}/v2/products/{sku}/stock", self.catalog_url))
            .bearer_auth(&self.token)
            .json(&json!({"onHand": on_hand}))
            .send()
            .await
            .unwrap();
        assert_eq!(counted.status(), 200);
    }

    pub async fn stock(&self, sku: &str) -> Value {
        self.get_json(format!("{}/v2/products/{sku}/stock", self.catalog_url))
            .await
    }

    pub async fn place(&self, customer: &str, lines: Value, key: Option<&str>) -> Response {
        self.place_order(json!({"customerId": customer, "lines": lines}), key)
            .await
    }

    /// `POST /v1/orders` with `body`.
    pub async fn place_order(&self, body: Value, key: Option<&str>) -> Response {
        let mut request = self
            .http
            .post(format!("{}/v1/orders", self.orders_url))
            .bearer_auth(&self.token)
            .json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    /// `GET url` with the token, as JSON.
    pub async fn get_json(&self, url: String) -> Value {
        self.http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn order(&self, id: &str) -> Value {
        self.get_json(format!("{}/v1/orders/{id}", self.orders_url))
            .await
    }

    /// `GET /v1/orders?<query>`.
    pub async fn list(&self, query: &str) -> Value {
        self.get_json(format!("{}/v1/orders?{query}", self.orders_url))
            .await
    }

    /// Waits until the order leaves `pending`, and returns it.
    pub async fn settled(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let order = self.order(id).await;
            if order["status"] != "pending" {
                return order;
            }
            assert!(Instant::now() < deadline, "order {id} stayed pending");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub use common::testing::eventually;

/// Serves what `configure` routes on a free loopback port, for a test that needs a peer (a
/// catalog that fails, an OTLP receiver): its base URL and the handle that stops it.
pub fn serve_stub(
    configure: impl Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
) -> (String, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
    let handle = server.handle();
    tokio::spawn(server);
    (url, handle)
}

impl Platform {
    /// Publishes an `orders.order.placed.v1` whose data no handler can read (about
    /// `subject`), on the platform's bus; it ends in the dead letters of the subscriptions
    /// that take it.
    pub async fn publish_poison(&self, subject: &str) -> common::bus::CloudEvent {
        let bus = common::runtime::adapters::open_bus(&self.settings).unwrap();
        let poison = common::bus::CloudEvent::new(
            "tests",
            <common::events::OrderPlaced as common::events::EventType>::TYPE,
            subject,
            json!({"orderId": 5}),
        );
        bus.publish(
            common::bus::topics::ORDERS,
            common::bus::Message::new(poison.clone()),
        )
        .await
        .unwrap();
        poison
    }
}
