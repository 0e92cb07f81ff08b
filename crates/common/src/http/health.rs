use std::sync::Arc;

use actix_web::{HttpResponse, web};
use async_trait::async_trait;
use serde_json::json;

use crate::error::{ApiError, ErrorCode};
use crate::store::SharedStore;

/// Something `/health/ready` must find working (the store, later the bus).
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), String>;
}

pub struct StoreReadiness(pub SharedStore);

#[async_trait]
impl ReadinessCheck for StoreReadiness {
    fn name(&self) -> &'static str {
        "store"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| {
            tracing::warn!(error = %e, "store readiness check failed");
            e.reason().to_owned()
        })
    }
}

pub struct BusReadiness(pub crate::bus::SharedBus);

#[async_trait]
impl ReadinessCheck for BusReadiness {
    fn name(&self) -> &'static str {
        "bus"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| {
            tracing::warn!(error = %e, "bus readiness check failed");
            "unavailable".to_owned()
        })
    }
}

/// What `/health/ready` looks at: the checks that must pass, and the outbound circuit
/// breakers, which only degrade (a peer failing does not make this service unready, so that
/// readiness does not flap with a peer).
pub(crate) struct Readiness {
    pub checks: Vec<Arc<dyn ReadinessCheck>>,
    pub breakers: crate::outbound::Breakers,
}

pub(crate) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "live"}))
}

pub(crate) async fn ready(readiness: web::Data<Readiness>) -> Result<HttpResponse, ApiError> {
    let mut report = serde_json::Map::new();
    for check in readiness.checks.iter() {
        if let Err(reason) = check.check().await {
            tracing::warn!(check = check.name(), %reason, "readiness check failed");
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("{} is not ready: {reason}", check.name()),
            )
            .with_retry_after(5));
        }
        report.insert(check.name().to_owned(), json!("ok"));
    }
    let status = if readiness.breakers.degraded() {
        "degraded"
    } else {
        "ready"
    };
    Ok(HttpResponse::Ok().json(json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "checks": report,
        "breakers": readiness.breakers.details(),
    })))
}
