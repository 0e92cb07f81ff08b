//! The console's pages and the actions their buttons post.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Console, ORDER_STATUSES};

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("overview.html", include_str!("templates/overview.html")),
    (
        "dead-letters.html",
        include_str!("templates/dead-letters.html"),
    ),
    ("webhooks.html", include_str!("templates/webhooks.html")),
    ("imports.html", include_str!("templates/imports.html")),
    ("connectors.html", include_str!("templates/connectors.html")),
];

/// Recent messages shown per webhook subscription.
const RECENT_MESSAGES: usize = 10;

pub(super) fn templates() -> anyhow::Result<minijinja::Environment<'static>> {
    let mut environment = minijinja::Environment::new();
    for (name, source) in TEMPLATES {
        environment.add_template(name, source)?;
    }
    Ok(environment)
}

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(overview))
        .route("/dead-letters", web::get().to(dead_letters))
        .route(
            "/dead-letters/{service}/{action}",
            web::post().to(act_on_dead_letter),
        )
        .route("/webhooks", web::get().to(webhooks))
        .route(
            "/webhooks/messages/{id}/retry",
            web::post().to(retry_message),
        )
        .route(
            "/webhooks/subscriptions/{id}/recover",
            web::post().to(recover_subscription),
        )
        .route("/imports", web::get().to(imports))
        .route("/connectors", web::get().to(connectors))
        .route("/connectors/{id}/retry", web::post().to(retry_connector));
}

/// Refuses a form posted from another site (the console acts with the operator's token).
pub(super) async fn same_origin_posts(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if req.method() == Method::POST {
        let header_text = |name| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let host = header_text(header::HOST).unwrap_or_default();
        let cross_site = header_text(header::HeaderName::from_static("sec-fetch-site"))
            .is_some_and(|site| site == "cross-site" || site == "same-site");
        let foreign_origin = header_text(header::ORIGIN).is_some_and(|origin| {
            origin
                .split_once("://")
                .map(|(_, rest)| rest)
                .is_none_or(|authority| authority != host)
        });
        if cross_site || foreign_origin {
            let refused = HttpResponse::Forbidden()
                .content_type("text/plain; charset=utf-8")
                .body("the console takes forms from its own pages only");
            return Ok(req.into_response(refused));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[derive(Deserialize)]
struct Notice {
    notice: Option<String>,
    error: Option<String>,
}

fn render(console: &Console, name: &str, values: minijinja::Value) -> HttpResponse {
    let rendered = console
        .templates
        .get_template(name)
        .and_then(|template| template.render(values));
    match rendered {
        Ok(html) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(html),
        Err(error) => {
            tracing::error!(%error, page = name, "a console page could not be rendered");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("this page could not be rendered; the console's log says why")
        }
    }
}

/// Back to `page` with what happened.
fn redirect(page: &str, outcome: Result<String, String>) -> HttpResponse {
    let (key, text) = match outcome {
        Ok(text) => ("notice", text),
        Err(text) => ("error", text),
    };
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(key, &text)
        .finish();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("{page}?{query}")))
        .finish()
}

async fn overview(console: web::Data<Console>, notice: web::Query<Notice>) -> HttpResponse {
    let mut services = Vec::new();
    for name in console.services.names() {
        let health = console.services.get(&name, "/health/ready").await;
        services.push(match health {
            Ok(ready) => {
                let breakers: Vec<Value> = ready["breakers"]
                    .as_object()
                    .map(|all| {
                        all.iter()
                            .map(|(target, b)| json!({"target": target, "state": b["state"], "timesOpened": b["timesOpened"]}))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"name": name, "status": ready["status"], "version": ready["version"],
                       "checks": ready["checks"], "breakers": breakers})
            }
            Err(error) => json!({"name": name, "status": "unreachable", "error": error}),
        });
    }
    let history: Vec<super::CountSample> = console
        .history
        .lock()
        .map(|h| h.iter().cloned().collect())
        .unwrap_or_default();
    let latest = history.last().cloned();
    let lines: Vec<Value> = ORDER_STATUSES
        .iter()
        .map(|status| {
            let values: Vec<u64> = history
                .iter()
                .map(|s| s.counts.get(*status).copied().unwrap_or(0))
                .collect();
            json!({"status": status, "points": sparkline(&values), "latest": values.last()})
        })
        .collect();
    render(
        &console,
        "overview.html",
        context! {
            page => "overview",
            services,
            lines,
            sampled_at => latest.map(|s| s.at),
            samples => history.len(),
            counted => super::services::COUNTED,
            has_orders => console.services.has("orders"),
            notice => notice.notice.clone(),
            error => notice.error.clone(),
        },
    )
}

/// The points of an SVG polyline 300 by 40 drawing `values`, highest at the top.
fn sparkline(values: &[u64]) -> String {
    let highest = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 {
        300.0 / (values.len() - 1) as f64
    } else {
        0.0
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                40.0 - (*v as f64 / highest) * 38.0
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn dead_letters(console: web::Data<Console>, notice: web::Query<Notice>) -> HttpResponse {
    let mut services = Vec::new();
    for name in console.services.names() {
        match console.services.get(&name, "/v1/admin/dead-letters").await {
            Ok(listed) => {
                let subscriptions: Vec<Value> = listed["subscriptions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|mut subscription| {
                        if let Some(messages) = subscription["messages"].as_array_mut() {
                            for message in messages {
                                let pretty = serde_json::to_string_pretty(&message["data"])
                                    .unwrap_or_default();
                                message["dataText"] = Value::String(pretty);
                            }
                        }
                        subscription
                    })
                    .collect();
                let total: usize = subscriptions
                    .iter()
                    .map(|s| s["messages"].as_array().map_or(0, Vec::len))
                    .sum();
                services
                    .push(json!({"name": name, "subscriptions": subscriptions, "total": total}));
            }
            Err(error) => services.push(json!({"name": name, "error": error})),
        }
    }
    render(
        &console,
        "dead-letters.html",
        context! { page => "dead-letters", services, notice => notice.notice.clone(), error => notice.error.clone() },
    )
}

#[derive(Deserialize)]
struct LetterForm {
    topic: String,
    subscription: String,
    id: String,
}

async fn act_on_dead_letter(
    console: web::Data<Console>,
    path: web::Path<(String, String)>,
    form: web::Form<LetterForm>,
) -> HttpResponse {
    let (service, action) = path.into_inner();
    if action != "replay" && action != "discard" {
        return redirect("/dead-letters", Err(format!("no action {action}")));
    }
    let segment = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let api = format!(
        "/v1/admin/dead-letters/{}/{}/{}/{action}",
        segment(&form.topic),
        segment(&form.subscription),
        segment(&form.id)
    );
    let outcome = console.services.post(&service, &api, None).await.map(|_| {
        let done = if action == "replay" {
            "replayed"
        } else {
            "discarded"
        };
        format!("{} {done} ({}/{})", form.id, form.topic, form.subscription)
    });
    redirect("/dead-letters", outcome)
}

async fn webhooks(console: web::Data<Console>, notice: web::Query<Notice>) -> HttpResponse {
    let (mut subscriptions, mut error) = (Vec::new(), notice.error.clone());
    if console.services.has("notifications") {
        match console
            .services
            .get("notifications", "/v1/subscriptions?limit=100")
            .await
        {
            Ok(listed) => {
                for mut subscription in listed["items"].as_array().cloned().unwrap_or_default() {
                    let id = subscription["id"].as_str().unwrap_or_default().to_owned();
                    let path = format!("/v1/messages?subscriptionId={id}&limit={RECENT_MESSAGES}");
                    subscription["messages"] =
                        match console.services.get("notifications", &path).await {
                            Ok(messages) => messages["items"].clone(),
                            Err(problem) => {
                                subscription["messagesError"] = Value::String(problem);
                                Value::Array(Vec::new())
                            }
                        };
                    subscriptions.push(subscription);
                }
            }
            Err(problem) => error = Some(problem),
        }
    }
    let since = (time::OffsetDateTime::now_utc() - time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    render(
        &console,
        "webhooks.html",
        context! { page => "webhooks", subscriptions, since, has_notifications => console.services.has("notifications"),
        notice => notice.notice.clone(), error },
    )
}

async fn retry_message(console: web::Data<Console>, id: web::Path<String>) -> HttpResponse {
    let api = format!(
        "/v1/messages/{}/retry",
        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    let outcome = console
        .services
        .post("notifications", &api, None)
        .await
        .map(|_| format!("message {id} is being sent again"));
    redirect("/webhooks", outcome)
}

#[derive(Deserialize)]
struct RecoverForm {
    since: String,
}

async fn recover_subscription(
    console: web::Data<Console>,
    id: web::Path<String>,
    form: web::Form<RecoverForm>,
) -> HttpResponse {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("since", &form.since)
        .finish();
    let api = format!(
        "/v1/subscriptions/{}/recover?{query}",
        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    let outcome = console
        .services
        .post("notifications", &api, None)
        .await
        .map(|answer| {
            format!(
                "{} failed messages of {id} are being sent again",
                answer["recovered"]
            )
        });
    redirect("/webhooks", outcome)
}

async fn imports(console: web::Data<Console>, notice: web::Query<Notice>) -> HttpResponse {
    let (mut jobs, mut error) = (Vec::new(), notice.error.clone());
    if console.services.has("sync") {
        match console.services.get("sync", "/v1/imports?limit=20").await {
            Ok(listed) => {
                for mut job in listed["items"].as_array().cloned().unwrap_or_default() {
                    let processed = job["processed"].as_f64().unwrap_or(0.0);
                    let percent = job["total"]
                        .as_f64()
                        .filter(|total| *total > 0.0)
                        .map(|total| (processed / total * 100.0).clamp(0.0, 100.0).round() as u64);
                    job["percent"] = json!(percent);
                    // The whole job for its bad rows: the list may carry fewer.
                    if job["failed"].as_u64().unwrap_or(0) > 0
                        && let Some(id) = job["id"].as_str()
                        && let Ok(full) = console
                            .services
                            .get("sync", &format!("/v1/imports/{id}"))
                            .await
                    {
                        job["errors"] = full["errors"].clone();
                    }
                    jobs.push(job);
                }
            }
            Err(problem) => error = Some(problem),
        }
    }
    let working = jobs
        .iter()
        .any(|job| matches!(job["state"].as_str(), Some("queued" | "running")));
    render(
        &console,
        "imports.html",
        context! { page => "imports", jobs, working, has_sync => console.services.has("sync"),
        notice => notice.notice.clone(), error },
    )
}

async fn connectors(console: web::Data<Console>, notice: web::Query<Notice>) -> HttpResponse {
    let (mut listed_connectors, mut error) = (Vec::new(), notice.error.clone());
    if console.services.has("sync") {
        match console.services.get("sync", "/v1/connectors").await {
            Ok(listed) => {
                for mut connector in listed["items"].as_array().cloned().unwrap_or_default() {
                    let id = connector["id"].as_str().unwrap_or_default().to_owned();
                    connector["status"] = console
                        .services
                        .get("sync", &format!("/v1/connectors/{id}/status"))
                        .await
                        .unwrap_or_else(|problem| json!({"error": problem}));
                    listed_connectors.push(connector);
                }
            }
            Err(problem) => error = Some(problem),
        }
    }
    render(
        &console,
        "connectors.html",
        context! { page => "connectors", connectors => listed_connectors, has_sync => console.services.has("sync"),
        notice => notice.notice.clone(), error },
    )
}

async fn retry_connector(console: web::Data<Console>, id: web::Path<String>) -> HttpResponse {
    let api = format!(
        "/v1/connectors/{}/retry",
        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    let outcome = console
        .services
        .post("sync", &api, None)
        .await
        .map(|answer| {
            format!(
                "{} parked changes of {id} are being sent again",
                answer["retried"]
            )
        });
    redirect("/connectors", outcome)
}
