//! The catalog's bulk upsert (`POST /v2/products:batch`), called with a service token, the
//! caller's trace context, a timeout per attempt and retries with back-off.

use std::time::Duration;

use common::config::Settings;
use common::outbound::{Breakers, ResilientClient, ServiceTokens, TokenError};
use serde::Deserialize;
use serde_json::Value;

use crate::settings::CatalogPeer;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogCallError {
    /// Not reached, or failing for now: the import waits and sends the batch again.
    #[error("the catalog is unavailable: {0}")]
    Unavailable(String),
    /// Refused as a whole (not item by item): sending it again would not help.
    #[error("the catalog refused the batch: {0}")]
    Refused(String),
}

/// One item's outcome, as the catalog reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct ItemAnswer {
    pub index: usize,
    pub status: String,
    #[serde(default)]
    pub errors: Vec<ItemError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ItemError {
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
struct BatchAnswer {
    items: Vec<ItemAnswer>,
}

#[derive(Clone)]
pub struct CatalogClient {
    http: ResilientClient,
    batch_url: url::Url,
    tokens: ServiceTokens,
}

impl CatalogClient {
    /// A client of the catalog at `peer.url` (or `url` when the platform knows better).
    pub fn from_settings(
        settings: &Settings,
        peer: &CatalogPeer,
        url: Option<&str>,
        breakers: Breakers,
    ) -> anyhow::Result<Self> {
        let base = url.unwrap_or(&peer.url).trim_end_matches('/');
        let batch_url = url::Url::parse(&format!("{base}/v2/products:batch"))?;
        let (timeout, connect) = (
            Duration::from_millis(peer.timeout_ms),
            Duration::from_millis(peer.timeout_ms.min(5_000)),
        );
        let http = common::outbound::LazyClient::new(move || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(connect)
                .build()
        });
        Ok(Self {
            http: ResilientClient::new(http, peer.attempts, breakers),
            batch_url,
            tokens: ServiceTokens::from_settings(settings, "sync", "catalog.read catalog.write")?,
        })
    }

    /// `<base>/v2/products/<sku>/stock`, the SKU checked and encoded as one path segment.
    fn stock_url(&self, sku: &str) -> Result<url::Url, CatalogCallError> {
        let sku = common::sku::Sku::parse(sku)
            .map_err(|rule| CatalogCallError::Refused(format!("SKU {sku:?} {rule}")))?;
        let mut url = self.batch_url.clone();
        url.path_segments_mut()
            .map_err(|()| CatalogCallError::Refused("the catalog URL cannot take a path".into()))?
            .pop()
            .extend(["products", sku.as_str(), "stock"]);
        Ok(url)
    }

    /// One call, tried `attempts` times while the catalog is unavailable; the answer of the
    /// first attempt that is not.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &url::Url,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, CatalogCallError> {
        let token = self.tokens.bearer().await.map_err(|error| match error {
            TokenError::Unavailable(_) => CatalogCallError::Unavailable(error.to_string()),
            TokenError::Mint(_) => CatalogCallError::Refused(error.to_string()),
        })?;
        let trace = common::telemetry::current_trace_headers();
        self.http
            .send(url, |client| {
                let mut request = client
                    .request(method.clone(), url.clone())
                    .bearer_auth(&token);
                if let Some(body) = body {
                    request = request.json(body);
                }
                for (name, value) in &trace {
                    request = request.header(name, value);
                }
                request
            })
            .await
            .map_err(|error| CatalogCallError::Unavailable(error.to_string()))
    }

    /// Refuses an answer that is not a success, with what it said.
    async fn success(response: reqwest::Response) -> Result<reqwest::Response, CatalogCallError> {
        if response.status().is_success() {
            return Ok(response);
        }
        Err(CatalogCallError::Refused(answered(response).await))
    }

    /// Upserts `items` (catalog bulk items), answering each one's outcome in order.
    #[tracing::instrument(name = "catalog.upsert_batch", skip_all, fields(otel.kind = "client", items = items.len(), attempts = tracing::field::Empty))]
    pub async fn upsert(&self, items: &[Value]) -> Result<Vec<ItemAnswer>, CatalogCallError> {
        let body = serde_json::json!({ "items": items });
        let response = self
            .call(reqwest::Method::POST, &self.batch_url, Some(&body))
            .await?;
        let answer: BatchAnswer = Self::success(response)
            .await?
            .json()
            .await
            .map_err(|e| CatalogCallError::Unavailable(format!("an unreadable answer: {e}")))?;
        if answer.items.len() != items.len() {
            return Err(CatalogCallError::Refused(format!(
                "answered {} items for {}",
                answer.items.len(),
                items.len()
            )));
        }
        Ok(answer.items)
    }

    /// The SKU's stock on hand; `None` when the catalog has no such product.
    #[tracing::instrument(name = "catalog.stock", skip(self), fields(otel.kind = "client", attempts = tracing::field::Empty))]
    pub async fn on_hand(&self, sku: &str) -> Result<Option<i64>, CatalogCallError> {
        let url = self.stock_url(sku)?;
        let response = self.call(reqwest::Method::GET, &url, None).await?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        let stock: Value = Self::success(response)
            .await?
            .json()
            .await
            .map_err(|e| CatalogCallError::Unavailable(format!("an unreadable answer: {e}")))?;
        Ok(stock["onHand"].as_i64())
    }

    /// Records a stock count of the SKU.
    #[tracing::instrument(name = "catalog.count", skip(self), fields(otel.kind = "client", attempts = tracing::field::Empty))]
    pub async fn count(&self, sku: &str, on_hand: i64) -> Result<(), CatalogCallError> {
        let url = self.stock_url(sku)?;
        let body = serde_json::json!({ "onHand": on_hand });
        let response = self.call(reqwest::Method::PUT, &url, Some(&body)).await?;
        Self::success(response).await.map(|_| ())
    }
}

/// What an unwelcome answer said: its status and the start of its body.
async fn answered(response: reqwest::Response) -> String {
    let status = response.status();
    let detail: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    format!("answered {status}: {detail}")
}
