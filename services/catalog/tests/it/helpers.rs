use common::config::Settings;
use common::http::ServiceHandle;
use reqwest::{Method, RequestBuilder, Response};
use secrecy::SecretString;
use serde_json::Value;

pub const SECRET: &str = "catalog-tests-secret-0123456789abcdef";
pub const ALL: &str = "catalog.read catalog.write";

pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    pub settings: Settings,
    handle: Option<ServiceHandle>,
    pub dir: tempfile::TempDir,
}

pub fn test_settings(dir: &std::path::Path) -> Settings {
    let mut settings = Settings::defaults();
    settings.data_dir = dir.to_owned();
    settings.http.workers = 1;
    settings.auth.hs256_secret = Some(SecretString::from(SECRET.to_owned()));
    settings.rate_limit.per_second = 10_000;
    settings.rate_limit.burst = 10_000;
    settings
}

/// A development token with `scopes`, signed with the tests' secret.
pub fn token_for(settings: &Settings, scopes: &str) -> String {
    common::auth::mint_dev_token(
        &SecretString::from(SECRET.to_owned()),
        &settings.auth,
        "tester",
        scopes,
        600,
    )
    .unwrap()
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        common::telemetry::init_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let mut settings = test_settings(dir.path());
        tweak(&mut settings);
        Self::start(settings, dir).await
    }

    async fn start(settings: Settings, dir: tempfile::TempDir) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let handle =
            catalog::startup::start(settings.clone(), common::runtime::Launch::on(listener))
                .await
                .unwrap();
        Self {
            url: handle.url(),
            http: reqwest::Client::new(),
            settings,
            handle: Some(handle),
            dir,
        }
    }

    /// Stops the server and starts a new one on the same data.
    pub async fn restart(mut self) -> Self {
        self.handle.take().unwrap().stop(true).await.unwrap();
        let settings = self.settings.clone();
        Self::start(settings, self.dir).await
    }

    pub fn token(&self, scopes: &str) -> String {
        token_for(&self.settings, scopes)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(self.token(ALL))
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request(Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    /// `GET path` once the product list has caught up with every write made so far (its
    /// `view-lag-ms` is 0), as JSON.
    pub async fn list(&self, path: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let response = self.get(path).await;
            assert_eq!(response.status(), 200, "{path}");
            let lag = response.headers()["view-lag-ms"]
                .to_str()
                .unwrap()
                .to_owned();
            if lag == "0" {
                return response.json().await.unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the view stayed {lag} ms behind"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    pub async fn put(&self, path: &str, body: Value, etag: Option<&str>) -> Response {
        let mut request = self.request(Method::PUT, path).json(&body);
        if let Some(etag) = etag {
            request = request.header("if-match", etag);
        }
        request.send().await.unwrap()
    }
}

pub fn product_v1(sku: &str, category: &str) -> Value {
    serde_json::json!({
        "sku": sku, "name": format!("Product {sku}"), "description": "A thing",
        "category": category, "price": 12.50, "currency": "EUR"
    })
}

pub fn product_v2(sku: &str, category: &str, amount: &str) -> Value {
    serde_json::json!({
        "sku": sku, "name": format!("Product {sku}"), "category": category,
        "price": {"amount": amount, "currency": "EUR"}
    })
}

pub fn etag(response: &Response) -> String {
    response
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// Asserts a problem+json answer with this status and returns its body.
pub async fn problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("urn:problem:"));
    assert!(body["title"].is_string());
    body
}

pub use common::testing::eventually;
