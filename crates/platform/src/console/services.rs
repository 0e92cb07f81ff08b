//! The services as the console reaches them: their base URLs and the operator's token.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// Orders counted per status at most (pages of 100).
pub const COUNTED: u64 = 1000;

/// Where the console's operator token comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// A token given to the console (from Entra ID, say); it must carry `platform.operator`.
    Fixed(String),
    /// Minted for each call from the development secret (`platform up`).
    Development {
        secret: secrecy::SecretString,
        auth: common::config::AuthSettings,
    },
}

impl TokenSource {
    fn token(&self) -> Result<String, String> {
        match self {
            Self::Fixed(token) => Ok(token.clone()),
            Self::Development { secret, auth } => common::auth::mint_dev_token(
                secret,
                auth,
                "console",
                common::http::OPERATOR_SCOPE,
                300,
            )
            .map_err(|e| format!("no operator token: {e}")),
        }
    }
}

#[derive(Clone)]
pub struct Services {
    http: reqwest::Client,
    urls: BTreeMap<String, String>,
    token: TokenSource,
}

impl Services {
    /// `urls` by service name (catalog, orders, sync, notifications; any may be missing).
    pub fn new(urls: BTreeMap<String, String>, token: TokenSource) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let urls = urls
            .into_iter()
            .map(|(name, url)| (name, url.trim_end_matches('/').to_owned()))
            .collect();
        Ok(Self { http, urls, token })
    }

    pub fn names(&self) -> Vec<String> {
        self.urls.keys().cloned().collect()
    }

    pub fn has(&self, service: &str) -> bool {
        self.urls.contains_key(service)
    }

    fn url(&self, service: &str, path: &str) -> Result<String, String> {
        self.urls
            .get(service)
            .map(|base| format!("{base}{path}"))
            .ok_or_else(|| format!("{service} is not known to this console"))
    }

    /// The JSON a service answers `GET path` with, or what went wrong, in words.
    pub async fn get(&self, service: &str, path: &str) -> Result<Value, String> {
        let request = self
            .http
            .get(self.url(service, path)?)
            .bearer_auth(self.token.token()?);
        answer(service, request).await
    }

    /// `POST path` (with a JSON body, or none).
    pub async fn post(
        &self,
        service: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .post(self.url(service, path)?)
            .bearer_auth(self.token.token()?);
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(service, request).await
    }

    /// Orders by status (each counted up to [`COUNTED`]); `None` when orders cannot be asked.
    pub async fn order_counts(&self) -> Option<BTreeMap<String, u64>> {
        if !self.has("orders") {
            return None;
        }
        let mut counts = BTreeMap::new();
        for status in super::ORDER_STATUSES {
            let mut counted = 0u64;
            let mut continuation: Option<String> = None;
            loop {
                let mut path = format!("/v1/orders?status={status}&limit=100");
                if let Some(next) = &continuation {
                    path.push_str("&continuation=");
                    path.push_str(
                        &url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>(),
                    );
                }
                let page = self.get("orders", &path).await.ok()?;
                counted += page["items"]
                    .as_array()
                    .map_or(0, |items| items.len() as u64);
                continuation = page["continuation"].as_str().map(str::to_owned);
                if continuation.is_none() || counted >= COUNTED {
                    break;
                }
            }
            counts.insert(status.to_owned(), counted.min(COUNTED));
        }
        Some(counts)
    }
}

async fn answer(service: &str, request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("{service} could not be reached: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let detail = body["detail"]
        .as_str()
        .or_else(|| body["title"].as_str())
        .unwrap_or("no detail");
    Err(format!("{service} answered {status}: {detail}"))
}
