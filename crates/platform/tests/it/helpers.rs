use std::time::{Duration, Instant};

use common::config::Settings;
use common::http::ServiceHandle;
use reqwest::Response;
use secrecy::SecretString;
use serde_json::{Value, json};

pub const SECRET: &str = "e2e-tests-secret-0123456789abcdef0123";
pub const ALL: &str = "catalog.read catalog.write orders.read orders.write";

pub fn settings(dir: &std::path::Path) -> Settings {
    let mut settings = Settings::defaults();
    settings.data_dir = dir.to_owned();
    settings.http.workers = 1;
    settings.auth.hs256_secret = Some(SecretString::from(SECRET.to_owned()));
    settings.rate_limit.enabled = false;
    settings.bus.poll_interval_ms = 50;
    settings.bus.retry_backoff_ms = vec![20, 50];
    settings
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

/// Catalog and orders in this process, on random ports, sharing one data folder.
pub struct Platform {
    pub catalog_url: String,
    pub orders_url: String,
    pub http: reqwest::Client,
    pub token: String,
    pub settings: Settings,
    handles: Vec<ServiceHandle>,
    pub dir: tempfile::TempDir,
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl Fn(&mut Settings)) -> Self {
        Self::start_on_bus(tweak, None).await
    }

    /// Both services on `bus` instead of the embedded one.
    pub async fn start_on_bus(
        tweak: impl Fn(&mut Settings),
        bus: Option<common::bus::SharedBus>,
    ) -> Self {
        common::telemetry::init_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let mut catalog_settings = settings(dir.path());
        tweak(&mut catalog_settings);
        let catalog = catalog::startup::start_on_bus(
            catalog_settings.clone(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            bus.clone(),
        )
        .await
        .unwrap();
        let mut orders_settings = settings(dir.path());
        orders_settings.services.catalog_url = catalog.url();
        tweak(&mut orders_settings);
        let orders = orders::startup::start_on_bus(
            orders_settings,
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            bus,
        )
        .await
        .unwrap();
        Self {
            catalog_url: catalog.url(),
            orders_url: orders.url(),
            http: reqwest::Client::new(),
            token: token(&catalog_settings),
            settings: catalog_settings,
            handles: vec![orders, catalog],
            dir,
        }
    }

    pub async fn stop(self) {
        for handle in self.handles {
            handle.stop(true).await.unwrap();
        }
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
        let mut request = self
            .http
            .post(format!("{}/v1/orders", self.orders_url))
            .bearer_auth(&self.token)
            .json(&json!({"customerId": customer, "lines": lines}));
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
