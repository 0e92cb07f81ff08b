use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};
use tracing::Instrument;

use crate::error::{ApiError, ErrorCode, PROBLEM_CONTENT_TYPE};
use crate::telemetry;

/// The service's name, as app data, for spans.
#[derive(Clone, Copy)]
pub(crate) struct ServiceName(pub &'static str);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One span per request, child of the caller's `traceparent` when one is sent.
pub async fn trace_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let service = req
        .app_data::<ServiceName>()
        .map_or("service", |name| name.0);
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // The route pattern (not the path) names the span: low cardinality, and known before
    // routing from the application's resource map. Found once: each look walks the map.
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{} {route}", req.method()),
        otel.kind = "server",
        service,
        http.method = %req.method(),
        http.route = %route,
        http.status_code = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
        request_id = %request_id,
        client = tracing::field::Empty,
    );
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    telemetry::adopt_parent(&span, header("traceparent"), header("tracestate"));
    let started = Instant::now();
    let method = req.method().clone();
    let mut response = next.call(req).instrument(span.clone()).await?;
    let status = response.status().as_u16();
    span.record("http.status_code", status);
    let elapsed = started.elapsed();
    span.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
    if let Some(metrics) = response.request().app_data::<crate::metrics::Metrics>() {
        metrics.record_request(method.as_str(), &route, status, elapsed);
    }
    span.in_scope(|| tracing::debug!(status, "request finished"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// Turns any error answer that is not already problem+json (unknown route, wrong method,
/// actix's own failures) into one, keeping the headers that matter.
pub async fn problem_fallback(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let response = next.call(req).await?;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_CONTENT_TYPE.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return Ok(response.map_into_left_body());
    }
    let code = ErrorCode::from_status(status);
    let detail = match code {
        ErrorCode::NotFound => format!("no resource at {}", response.request().path()),
        ErrorCode::MethodNotAllowed => {
            format!("{} is not allowed here", response.request().method())
        }
        _ => code.title().to_owned(),
    };
    let kept: Vec<(HeaderName, HeaderValue)> =
        [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE]
            .into_iter()
            .filter_map(|name| response.headers().get(&name).map(|v| (name, v.clone())))
            .collect();
    let (request, _) = response.into_parts();
    let mut problem = ApiError::new(code, detail).error_response();
    for (name, value) in kept {
        problem.headers_mut().insert(name, value);
    }
    Ok(ServiceResponse::new(request, problem).map_into_right_body())
}

pub(crate) async fn not_found(
    req: actix_web::HttpRequest,
) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("no resource at {}", req.path()),
    ))
}

/// A JSON document built on first demand (an OpenAPI or AsyncAPI description): nothing a
/// start needs, so a start does not pay for it, and kept as text once built.
#[derive(Clone)]
pub struct LazyDocument {
    build: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    text: Arc<OnceLock<web::Bytes>>,
}

impl LazyDocument {
    pub fn new(build: impl Fn() -> serde_json::Value + Send + Sync + 'static) -> Self {
        Self {
            build: Arc::new(build),
            text: Arc::default(),
        }
    }

    fn bytes(&self) -> web::Bytes {
        self.text
            .get_or_init(|| {
                serde_json::to_vec(&(self.build)())
                    .map(web::Bytes::from)
                    .unwrap_or_default()
            })
            .clone()
    }

    fn answer(&self) -> actix_web::HttpResponse {
        actix_web::HttpResponse::Ok()
            .content_type("application/json")
            .body(self.bytes())
    }
}

/// The service's OpenAPI document.
pub(crate) struct OpenApiDocument(pub LazyDocument);

/// The service's AsyncAPI document (a type of its own beside the OpenAPI one).
pub(crate) struct AsyncApiDocument(pub LazyDocument);

pub(crate) async fn openapi(document: web::Data<OpenApiDocument>) -> actix_web::HttpResponse {
    document.0.answer()
}

pub(crate) async fn asyncapi(document: web::Data<AsyncApiDocument>) -> actix_web::HttpResponse {
    document.0.answer()
}

/// Body encodings the server decodes; any other would reach the handlers undecoded.
const DECODED_ENCODINGS: &[&str] = &["gzip", "x-gzip", "identity"];

/// Why a request's representation is refused before any handler reads it, if it is.
fn unsupported_representation(req: &ServiceRequest) -> Option<String> {
    for value in req.headers().get_all(header::CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Some("Content-Encoding is not readable text".to_owned());
        };
        for coding in text.split(',').map(|c| c.trim().to_ascii_lowercase()) {
            if !coding.is_empty() && !DECODED_ENCODINGS.contains(&coding.as_str()) {
                return Some(format!(
                    "Content-Encoding {coding} is not supported; send gzip or no encoding"
                ));
            }
        }
    }
    let content_type = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    let charset = content_type
        .split(';')
        .skip(1)
        .filter_map(|parameter| parameter.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, value)| value.trim().trim_matches('"').to_ascii_lowercase())?;
    (charset != "utf-8" && charset != "utf8")
        .then(|| format!("charset {charset} is not supported; send UTF-8"))
}

/// Refuses bodies the service would misread (an encoding it does not decode, a charset
/// other than UTF-8) with 415, and marks every answer `nosniff` and every answer to an
/// authenticated request as not storable by shared caches.
pub async fn guard_representation(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let authenticated = req.headers().contains_key(header::AUTHORIZATION);
    let mut response = match unsupported_representation(&req) {
        Some(reason) => {
            let problem = ApiError::new(ErrorCode::UnsupportedMediaType, reason).error_response();
            req.into_response(problem).map_into_right_body()
        }
        None => next.call(req).await?.map_into_left_body(),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if authenticated && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// What a body that did not arrive in time reads as.
pub(crate) const BODY_TIMED_OUT: &str = "the request body did not arrive in time";

/// Gives the request's body a deadline: `http.request_timeout_seconds` from when the
/// request started (actix bounds the headers by the same time). A body still incomplete
/// then ends in an error that the extractors answer with 408.
pub async fn bound_request_time(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Without Content-Length or Transfer-Encoding an HTTP/1.1 request has no body: no
    // timer is needed (most reads).
    let headers = req.headers();
    let may_have_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length != "0");
    if !may_have_body {
        return next.call(req).await;
    }
    let (limit, streamed) = match req.app_data::<RequestTimeout>() {
        Some(timeout) => (
            timeout.limit,
            timeout.streamed_uploads.contains(&req.path()),
        ),
        None => (std::time::Duration::from_secs(30), false),
    };
    let payload = req.take_payload();
    let deadline = Box::pin(tokio::time::sleep(limit));
    let timed = TimedPayload {
        inner: payload,
        deadline,
        // A file upload may take as long as it needs while it keeps coming: the limit is
        // then on the silence between pieces.
        idle: streamed.then_some(limit),
    };
    req.set_payload(actix_web::dev::Payload::Stream {
        payload: Box::pin(timed),
    });
    next.call(req).await
}

/// The request time limit, as app data, and the routes whose bodies are files streamed
/// through (bounded by the silence between pieces instead).
#[derive(Clone)]
pub(crate) struct RequestTimeout {
    pub limit: std::time::Duration,
    pub streamed_uploads: Vec<&'static str>,
}

struct TimedPayload {
    inner: actix_web::dev::Payload,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    idle: Option<std::time::Duration>,
}

impl futures_util::Stream for TimedPayload {
    type Item = Result<actix_web::web::Bytes, actix_web::error::PayloadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(idle) = self.idle {
                    let next = tokio::time::Instant::now() + idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(actix_web::error::PayloadError::Io(
                    std::io::Error::new(std::io::ErrorKind::TimedOut, BODY_TIMED_OUT),
                )))),
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }
}

/// Bodies smaller than this go out uncompressed: gzip of a few hundred bytes costs more CPU
/// (and often bytes) than it saves.
const COMPRESS_FROM_BYTES: u64 = 1024;

/// Keeps `Compress` (which skips a response that already names its encoding) off small
/// bodies; [`unmark_small_bodies`] takes the mark off again outside it.
pub(crate) async fn mark_small_bodies(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(req).await?;
    if let actix_web::body::BodySize::Sized(size) = response.response().body().size()
        && size < COMPRESS_FROM_BYTES
        && !response.headers().contains_key(header::CONTENT_ENCODING)
    {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    Ok(response)
}

/// Removes the mark [`mark_small_bodies`] set: `identity` is not a content coding to send.
pub(crate) async fn unmark_small_bodies(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(req).await?;
    if response
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|value| value == "identity")
    {
        response.headers_mut().remove(header::CONTENT_ENCODING);
    }
    Ok(response)
}
