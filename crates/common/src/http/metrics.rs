//! `GET /metrics`: the service's figures in Prometheus text, for whoever
//! `telemetry.metrics_access` lets in.

use actix_web::{FromRequest, HttpRequest, HttpResponse};

use crate::auth::Principal;
use crate::config::MetricsAccess;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{Metrics, prometheus};

/// The scope that opens `/metrics` to a caller off this machine (`metrics_access = "operator"`).
pub const OPERATOR_SCOPE: &str = "platform.operator";

pub(crate) async fn prometheus_text(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let Some(metrics) = req.app_data::<Metrics>() else {
        return Err(not_here(&req));
    };
    let on_loopback = req.peer_addr().is_some_and(|peer| peer.ip().is_loopback());
    match metrics.access() {
        MetricsAccess::Off => return Err(not_here(&req)),
        MetricsAccess::Open => {}
        MetricsAccess::Loopback if on_loopback => {}
        // Not announced to callers who may not read it.
        MetricsAccess::Loopback => return Err(not_here(&req)),
        MetricsAccess::Operator if on_loopback => {}
        MetricsAccess::Operator => {
            let principal = Principal::extract(&req).await?;
            principal.require(OPERATOR_SCOPE)?;
        }
    }
    let text = metrics.render_prometheus().await.map_err(|error| {
        tracing::error!(%error, "metrics could not be read");
        ApiError::new(ErrorCode::Internal, "the metrics could not be read")
    })?;
    Ok(HttpResponse::Ok()
        .content_type(prometheus::CONTENT_TYPE)
        .body(text))
}

fn not_here(req: &HttpRequest) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no resource at {}", req.path()),
    )
}
