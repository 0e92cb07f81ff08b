//! What the acceptance suite runs against: base URLs and a token, nothing else.
//!
//! - Given `PLATFORM_CATALOG_URL`, `PLATFORM_ORDERS_URL`, `PLATFORM_SYNC_URL`,
//!   `PLATFORM_NOTIFICATIONS_URL` and `PLATFORM_TOKEN` (a bearer token with every scope), the
//!   tests run against that deployment: the compose set-up, or Azure.
//! - Otherwise each test starts the platform as `platform up` does, on a scratch data folder
//!   and free ports, and mints a development token.
//!
//! Every test names what it creates with a fresh run id, so that runs against a long-lived
//! deployment never meet each other's data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use common::config::Sources;
use common::http::ServiceHandle;
use secrecy::SecretString;
use serde_json::{Value, json};

pub const SCOPES: &str =
    "catalog.read catalog.write orders.read orders.write sync.admin notifications.admin";
const SECRET: &str = "acceptance-secret-0123456789abcdef0123";

pub struct Target {
    pub catalog: String,
    pub orders: String,
    pub sync: String,
    pub notifications: String,
    pub token: String,
    pub http: reqwest::Client,
    /// Unique per test run: a prefix for SKUs, customers and names.
    pub run: String,
    /// Whether the services run here (their addresses are loopback ones).
    pub local: bool,
    handles: Vec<ServiceHandle>,
    _data: Option<tempfile::TempDir>,
}

impl Target {
    /// The deployment named by the environment, or `platform up` started here.
    pub async fn get() -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase();
        let http = reqwest::Client::new();
        if let (Ok(catalog), Ok(orders), Ok(sync), Ok(notifications), Ok(token)) = (
            std::env::var("PLATFORM_CATALOG_URL"),
            std::env::var("PLATFORM_ORDERS_URL"),
            std::env::var("PLATFORM_SYNC_URL"),
            std::env::var("PLATFORM_NOTIFICATIONS_URL"),
            std::env::var("PLATFORM_TOKEN"),
        ) {
            let local = [&catalog, &orders, &sync, &notifications]
                .iter()
                .all(|url| url.contains("127.0.0.1") || url.contains("localhost"));
            return Self {
                catalog,
                orders,
                sync,
                notifications,
                token,
                http,
                run,
                local,
                handles: Vec::new(),
                _data: None,
            };
        }
        let data = tempfile::tempdir().unwrap();
        let sources = Sources::defaults_only()
            .with_override("data_dir", data.path().display().to_string())
            .with_override("http.port", "0")
            .with_override("webhooks.allow_private_targets", "true")
            .with_override("webhooks.retry_schedule_ms", "[0, 50, 50, 50]");
        let selected = platform::registry::select(&[]).unwrap();
        let mut loaded = platform::registry::load(&selected, &sources).unwrap();
        for service in &mut loaded {
            let settings = service.settings();
            settings.auth.hs256_secret = Some(SecretString::from(SECRET.to_owned()));
            settings.rate_limit.enabled = false;
            settings.bus.poll_interval_ms = 50;
        }
        let handles = platform::registry::start(loaded, None).await.unwrap();
        let url = |name: &str| platform::registry::url(&handles, name).unwrap();
        let token = common::auth::mint_dev_token(
            &SecretString::from(SECRET.to_owned()),
            &common::config::Settings::defaults().auth,
            "acceptance",
            SCOPES,
            3600,
        )
        .unwrap();
        Self {
            catalog: url("catalog"),
            orders: url("orders"),
            sync: url("sync"),
            notifications: url("notifications"),
            token,
            http,
            run,
            local: true,
            handles,
            _data: Some(data),
        }
    }

    /// Stops what the suite started here.
    pub async fn stop(self) {
        for handle in self.handles.into_iter().rev() {
            handle.stop(true).await.unwrap();
        }
    }

    /// A name unique to this run.
    pub fn unique(&self, name: &str) -> String {
        format!("{name}-{}", self.run)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        request.bearer_auth(&self.token).send().await.unwrap()
    }

    pub async fn get_json(&self, url: String) -> Value {
        self.send(self.http.get(url)).await.json().await.unwrap()
    }

    /// A product with its stock.
    pub async fn product(&self, sku: &str, amount: &str, on_hand: i64) {
        let created = self
            .send(
                self.http
                    .post(format!("{}/v2/products", self.catalog))
                    .json(&json!({
                "sku": sku, "name": sku, "category": self.unique("acceptance"),
                "price": {"amount": amount, "currency": "EUR"}})),
            )
            .await;
        assert_eq!(created.status(), 201, "{sku}");
        let counted = self
            .send(
                self.http
                    .put(format!("{}/v2/products/{sku}/stock", self.catalog))
                    .json(&json!({"onHand": on_hand})),
            )
            .await;
        assert_eq!(counted.status(), 200);
    }

    pub async fn stock(&self, sku: &str) -> Value {
        self.get_json(format!("{}/v2/products/{sku}/stock", self.catalog))
            .await
    }

    pub async fn place(&self, body: Value) -> reqwest::Response {
        self.send(
            self.http
                .post(format!("{}/v1/orders", self.orders))
                .json(&body),
        )
        .await
    }

    /// Waits until the order leaves `pending`; returns it.
    pub async fn settled(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let order = self
                .get_json(format!("{}/v1/orders/{id}", self.orders))
                .await;
            if order["status"] != "pending" {
                return order;
            }
            assert!(Instant::now() < deadline, "order {id} stayed pending");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
