//! `/v1/connectors`: register external systems, pause and resume them, see how their
//! deliveries go, send parked changes again. Secrets are write-only.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use common::auth::Principal;
use common::error::Problem;
use common::http::{IfMatch, etag_header_value, if_match};
use common::store::ETag;
use common::validation::{Fields, JsonObject};
use common::{ApiError, ErrorCode, FieldError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::ADMIN_SCOPE;
use crate::connectors::{ConnectorError, ConnectorInput, Connectors, parked_view};
use crate::domain::connector::{Connector, ConnectorAuth, Entity};

impl From<ConnectorError> for ApiError {
    fn from(error: ConnectorError) -> Self {
        match error {
            ConnectorError::NotFound(id) => ApiError::not_found(format!("connector {id}")),
            ConnectorError::Stale => ApiError::new(
                ErrorCode::PreconditionFailed,
                "the connector changed since the ETag in If-Match; read it again",
            ),
            ConnectorError::Target(reason) => {
                ApiError::validation(vec![FieldError::new("url", reason.to_string())])
            }
            ConnectorError::Store(error) => error.into(),
        }
    }
}

/// The body of `POST /v1/connectors` and `PUT /v1/connectors/{id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct ConnectorInputDoc {
    /// 1-100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Where changes are POSTed (http or https, a public address).
    #[schema(min_length = 1, max_length = 2048)]
    url: String,
    /// Any of `orders`, `products`, `stock` (changes sent to it) and `stockSource` (stock
    /// levels read from it when reconciling).
    #[schema(min_items = 1)]
    entities: Vec<String>,
    /// `{"kind": "bearer", "token"}`, `{"kind": "hmac", "secret"}` or `{"kind": "none"}`;
    /// on PUT optional (the secret there is stays). Never shown again.
    auth: Option<Value>,
}

/// A connector as shown: its auth kind, never its secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorView {
    id: String,
    name: String,
    url: String,
    entities: Vec<&'static str>,
    /// `bearer`, `hmac` or `none`.
    auth: &'static str,
    paused: bool,
}

fn view(connector: &Connector) -> ConnectorView {
    ConnectorView {
        id: connector.id.clone(),
        name: connector.name.clone(),
        url: connector.url.clone(),
        entities: connector.entities.iter().map(|e| e.as_str()).collect(),
        auth: connector.auth.kind(),
        paused: connector.paused,
    }
}

fn answer(status: StatusCode, connector: &Connector, etag: &ETag) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, etag_header_value(etag)))
        .json(view(connector))
}

fn read_auth(fields: &mut Fields, required: bool) -> Option<Option<ConnectorAuth>> {
    let auth = fields.object("auth", required, |auth| {
        let kind = auth.exact_string("kind", true, 1..=10);
        match kind.as_deref() {
            Some("bearer") => auth
                .exact_string("token", true, 1..=4096)
                .map(|token| ConnectorAuth::Bearer { token }),
            Some("hmac") => auth
                .exact_string("secret", true, 16..=4096)
                .map(|secret| ConnectorAuth::Hmac { secret }),
            Some("none") => Some(ConnectorAuth::None),
            Some(_) => {
                auth.reject("kind", "must be bearer, hmac or none");
                None
            }
            None => None,
        }
    });
    Some(auth)
}

fn read_input(body: JsonObject, creating: bool) -> Result<ConnectorInput, ApiError> {
    let mut fields = Fields::new(body);
    let name = fields.string("name", true, 1..=100);
    let url = fields.exact_string("url", true, 1..=2048);
    let entities = fields
        .string_list("entities", true, 1..=3)
        .and_then(|texts| {
            let mut entities = Vec::new();
            for text in texts {
                match Entity::parse(&text) {
                    Some(entity) if !entities.contains(&entity) => entities.push(entity),
                    Some(_) => {
                        fields.reject("entities", format!("{text} appears twice"));
                        return None;
                    }
                    None => {
                        fields.reject(
                            "entities",
                            "must hold only orders, products, stock and stockSource",
                        );
                        return None;
                    }
                }
            }
            Some(entities)
        });
    let auth = read_auth(&mut fields, false).flatten();
    let input = match (name, url, entities) {
        (Some(name), Some(url), Some(entities)) => Some(ConnectorInput {
            name,
            url,
            entities,
            auth: match (auth, creating) {
                (None, true) => Some(ConnectorAuth::None),
                (auth, _) => auth,
            },
        }),
        _ => None,
    };
    fields.finish(input)
}

/// Register a connector.
#[utoipa::path(post, path = "/v1/connectors", tag = "connectors", request_body = ConnectorInputDoc,
    responses((status = 201, description = "Registered; `ETag` set", body = ConnectorView),
        (status = 422, body = Problem)),
    security(("bearer" = ["sync.admin"])))]
pub async fn create(
    principal: Principal,
    connectors: web::Data<Connectors>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    let input = read_input(body.into_inner(), true)?;
    let (connector, etag) = connectors.create(input).await?;
    let mut response = answer(StatusCode::CREATED, &connector, &etag);
    if let Ok(value) = header::HeaderValue::from_str(&format!("/v1/connectors/{}", connector.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

fn known_id(id: &str) -> Result<(), ApiError> {
    match uuid::Uuid::parse_str(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::not_found(format!("connector {id}"))),
    }
}

/// Every connector.
#[utoipa::path(get, path = "/v1/connectors", tag = "connectors",
    responses((status = 200, body = Vec<ConnectorView>)),
    security(("bearer" = ["sync.admin"])))]
pub async fn list(
    principal: Principal,
    connectors: web::Data<Connectors>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    let all = connectors.list().await?;
    Ok(HttpResponse::Ok().json(all.iter().map(view).collect::<Vec<_>>()))
}

/// A connector.
#[utoipa::path(get, path = "/v1/connectors/{id}", tag = "connectors",
    responses((status = 200, body = ConnectorView), (status = 404, body = Problem)),
    security(("bearer" = ["sync.admin"])))]
pub async fn get(
    principal: Principal,
    connectors: web::Data<Connectors>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_id(&id)?;
    let (connector, etag) = connectors.get(&id).await?;
    Ok(answer(StatusCode::OK, &connector, &etag))
}

/// Replace a connector's settings. Needs `If-Match`; without `auth` the secret stays.
#[utoipa::path(put, path = "/v1/connectors/{id}", tag = "connectors", request_body = ConnectorInputDoc,
    params(("If-Match" = String, Header, description = "The connector's ETag as last read", pattern = "^(\\*|(W/)?\"[!#-~]*\")$")),
    responses((status = 200, body = ConnectorView), (status = 404, body = Problem), (status = 412, body = Problem),
        (status = 428, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["sync.admin"])))]
pub async fn replace(
    req: HttpRequest,
    principal: Principal,
    connectors: web::Data<Connectors>,
    id: web::Path<String>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_id(&id)?;
    let expected = match if_match(&req)? {
        IfMatch::Absent => {
            return Err(ApiError::new(
                ErrorCode::PreconditionRequired,
                "send If-Match with the connector's ETag (or *)",
            ));
        }
        IfMatch::Any => connectors.get(&id).await?.1,
        IfMatch::Tag(tag) => tag,
    };
    let input = read_input(body.into_inner(), false)?;
    let (connector, etag) = connectors.replace(&id, input, &expected).await?;
    Ok(answer(StatusCode::OK, &connector, &etag))
}

/// Remove a connector and everything queued for it. `If-Match` optional.
#[utoipa::path(delete, path = "/v1/connectors/{id}", tag = "connectors",
    params(("If-Match" = Option<String>, Header, nullable = false, description = "Only if the ETag still matches (or `*`)", pattern = "^(\\*|(W/)?\"[!#-~]*\")?$")),
    responses((status = 204), (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("bearer" = ["sync.admin"])))]
pub async fn delete(
    req: HttpRequest,
    principal: Principal,
    connectors: web::Data<Connectors>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_id(&id)?;
    let expected = if_match(&req)?;
    connectors.delete(&id, expected.etag()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Stop delivering to a connector; changes keep being queued for it.
#[utoipa::path(post, path = "/v1/connectors/{id}/pause", tag = "connectors",
    responses((status = 200, body = ConnectorView), (status = 404, body = Problem)),
    security(("bearer" = ["sync.admin"])))]
pub async fn pause(
    principal: Principal,
    connectors: web::Data<Connectors>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(principal, connectors, id, true).await
}

/// Deliver to a connector again, starting with what was queued meanwhile.
#[utoipa::path(post, path = "/v1/connectors/{id}/resume", tag = "connectors",
    responses((status = 200, body = ConnectorView), (status = 404, body = Problem)),
    security(("bearer" = ["sync.admin"])))]
pub async fn resume(
    principal: Principal,
    connectors: web::Data<Connectors>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(principal, connectors, id, false).await
}

async fn set_paused(
    principal: Principal,
    connectors: web::Data<Connectors>,
    id: web::Path<String>,
    paused: bool,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_id(&id)?;
    let (connector, etag) = connectors.set_paused(&id, paused).await?;
    Ok(answer(StatusCode::OK, &connector, &etag))
}

/// How many parked changes were queued again.
#[derive(Serialize, ToSchema)]
pub struct RetryAnswer {
    retried: usize,
}

/// Send the connector's parked changes again, in their order.
#[utoipa::path(post, path = "/v1/connectors/{id}/retry", tag = "connectors",
    responses((status = 200, body = RetryAnswer), (status = 404, body = Problem)),
    security(("bearer" = ["sync.admin"])))]
pub async fn retry(
    principal: Principal,
    connectors: web::Data<Connectors>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_id(&id)?;
    let retried = connectors.retry(&id).await?;
    Ok(HttpResponse::Ok().json(RetryAnswer { retried }))
}

/// A connector's deliveries: the last one, the lag, failures, what is parked.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// Changes delivered since the connector was registered.
    delivered: u64,
    /// Failed attempts since the connector was registered.
    failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_delivered: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// Changes waiting: how many, and how long the oldest has waited (seconds).
    lag: Value,
    /// Changes that kept failing, in order: sent again by `POST .../retry`.
    #[schema(value_type = Vec<Object>)]
    parked: Vec<Value>,
}

/// A connector's delivery status.
#[utoipa::path(get, path = "/v1/connectors/{id}/status", tag = "connectors",
    responses((status = 200, body = StatusView), (status = 404, body = Problem)),
    security(("bearer" = ["sync.admin"])))]
pub async fn status(
    principal: Principal,
    connectors: web::Data<Connectors>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_id(&id)?;
    let status = connectors.status(&id).await?;
    let figures = status.figures;
    let last_delivered = figures.last_event_id.as_ref().map(|event_id| {
        serde_json::json!({
            "eventId": event_id,
            "type": figures.last_event_type,
            "at": figures.last_delivered_at.and_then(common::clock::rfc3339),
        })
    });
    Ok(HttpResponse::Ok().json(StatusView {
        delivered: figures.delivered,
        failures: figures.failures,
        last_delivered,
        last_error: figures.last_error,
        lag: serde_json::json!({
            "count": status.pending,
            "oldestSeconds": status.oldest_pending_ms.map(|ms| ms / 1000),
        }),
        parked: status.parked.iter().map(parked_view).collect(),
    }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `continuation` of the previous page.
    #[param(min_length = 1)]
    continuation: Option<String>,
}

/// Reconciliation runs, newest first: what was sent again, and each stock source's drift.
#[utoipa::path(get, path = "/v1/reconciliations", tag = "reconciliation", params(ReportParams),
    responses((status = 200, description = "`{items, continuation?}`", body = Object)),
    security(("bearer" = ["sync.admin"])))]
pub async fn reconciliations(
    principal: Principal,
    reconciler: web::Data<crate::reconcile::Reconciler>,
    params: web::Query<ReportParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    let ReportParams {
        limit,
        continuation,
    } = params.into_inner();
    let limit = common::validation::page_limit(limit)?;
    let (reports, continuation) = reconciler
        .reports(limit, continuation)
        .await
        .map_err(reconcile_problem)?;
    let mut page = serde_json::json!({
        "items": reports.iter().map(crate::reconcile::report_view).collect::<Vec<_>>(),
    });
    if let Some(next) = continuation {
        page["continuation"] = Value::String(next);
    }
    Ok(HttpResponse::Ok().json(page))
}

/// Reconcile now (as the timer does), and answer the report.
#[utoipa::path(post, path = "/v1/reconciliations", tag = "reconciliation",
    responses((status = 200, description = "The run's report", body = Object)),
    security(("bearer" = ["sync.admin"])))]
pub async fn reconcile_now(
    principal: Principal,
    reconciler: web::Data<crate::reconcile::Reconciler>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    let report = reconciler.run("request").await.map_err(reconcile_problem)?;
    Ok(HttpResponse::Ok().json(crate::reconcile::report_view(&report)))
}

fn reconcile_problem(error: crate::reconcile::ReconcileError) -> ApiError {
    match error {
        crate::reconcile::ReconcileError::Connectors(error) => error.into(),
        crate::reconcile::ReconcileError::Store(error) => error.into(),
    }
}
