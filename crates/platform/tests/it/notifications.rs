//! Notifications: signed webhooks that a Standard Webhooks verifier accepts, a receiver that
//! was down gets everything once back, one that keeps failing ends with failed messages
//! (and a disabled endpoint) that can be sent again by hand; e-mail over a real SMTP server;
//! a duplicate event sends nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::testing::python::{SmtpSink, verify_standard_webhook};
use serde_json::{Value, json};

use crate::helpers::*;

/// A delivery as the receiver got it.
#[derive(Clone, Debug)]
pub struct Hook {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

impl Hook {
    pub fn event(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// Whether the Standard Webhooks reference verifier accepts it under `secret`.
    pub fn verifies(&self, secret: &str) -> Result<(), String> {
        verify_standard_webhook(
            secret,
            &[
                ("webhook-id", &self.id),
                ("webhook-timestamp", &self.timestamp),
                ("webhook-signature", &self.signature),
            ],
            &self.body,
        )
    }
}

pub const ANSWER_OK: u8 = 0;
pub const ANSWER_DOWN: u8 = 1;
pub const ANSWER_BROKEN: u8 = 2;
/// Takes its time (100 ms) before taking a delivery.
pub const ANSWER_SLOW: u8 = 3;
/// Holds every delivery unanswered until told otherwise.
pub const ANSWER_HOLD: u8 = 4;

/// A webhook endpoint: records what it is sent, and answers as told.
pub struct WebhookReceiver {
    pub url: String,
    pub hooks: Arc<Mutex<Vec<Hook>>>,
    pub answer: Arc<AtomicU8>,
    _server: actix_web::dev::ServerHandle,
}

impl WebhookReceiver {
    pub fn start() -> Self {
        let hooks: Arc<Mutex<Vec<Hook>>> = Arc::default();
        let answer = Arc::new(AtomicU8::new(ANSWER_OK));
        let (state, mode) = (hooks.clone(), answer.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            let (state, mode) = (state.clone(), mode.clone());
            App::new().route(
                "/hooks",
                web::post().to(move |req: HttpRequest, body: web::Bytes| {
                    let (state, mode) = (state.clone(), mode.clone());
                    async move {
                        match mode.load(Ordering::SeqCst) {
                            ANSWER_DOWN => {
                                return HttpResponse::ServiceUnavailable()
                                    .insert_header(("retry-after", "0"))
                                    .body("down for maintenance");
                            }
                            ANSWER_BROKEN => {
                                return HttpResponse::InternalServerError().body("broken");
                            }
                            ANSWER_SLOW => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            ANSWER_HOLD => {
                                while mode.load(Ordering::SeqCst) == ANSWER_HOLD {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            }
                            _ => {}
                        }
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        state.lock().unwrap().push(Hook {
                            id: header("webhook-id"),
                            timestamp: header("webhook-timestamp"),
                            signature: header("webhook-signature"),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        HttpResponse::NoContent().finish()
                    }
                }),
            )
        })
        .workers(2)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            hooks,
            answer,
            _server: handle,
        }
    }

    pub fn set(&self, answer: u8) {
        self.answer.store(answer, Ordering::SeqCst);
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    /// The deliveries of events about `order`.
    pub fn about(&self, order: &str) -> Vec<Hook> {
        self.hooks()
            .into_iter()
            .filter(|h| h.event()["subject"] == order)
            .collect()
    }
}

/// Notifications' settings for tests: local receivers allowed, retries in milliseconds.
pub fn overrides(schedule: &str, smtp: Option<&SmtpSink>) -> Vec<(&'static str, String)> {
    let mut overrides = vec![
        ("webhooks.allow_private_targets", "true".to_owned()),
        ("webhooks.retry_schedule_ms", schedule.to_owned()),
        ("webhooks.jitter_percent", "0".to_owned()),
        ("webhooks.poll_interval_ms", "50".to_owned()),
        ("webhooks.timeout_ms", "2000".to_owned()),
        // Endpoints a test takes down come back within the test.
        ("outbound.breaker_open_ms", "300".to_owned()),
    ];
    match smtp {
        Some(smtp) => overrides.extend([
            ("email.kind", "smtp".to_owned()),
            ("email.smtp.host", "127.0.0.1".to_owned()),
            ("email.smtp.port", smtp.port.to_string()),
            ("email.smtp.security", "none".to_owned()),
        ]),
        None => overrides.push(("email.kind", "off".to_owned())),
    }
    overrides
}

async fn call(
    platform: &Platform,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = platform
        .http
        .request(method, format!("{}{path}", platform.notifications_url))
        .bearer_auth(&platform.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// `POST path` with no body: pause, resume, rotate-secret, retry, recover.
async fn post(platform: &Platform, path: &str) -> reqwest::Response {
    call(platform, reqwest::Method::POST, path, None).await
}

/// Creates a subscription; returns its id and secret.
pub async fn subscribe(platform: &Platform, url: &str, event_types: Value) -> (String, String) {
    let created = call(
        platform,
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": url, "eventTypes": event_types, "description": "e2e"})),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert!(created.headers().get("etag").is_some());
    let subscription: Value = created.json().await.unwrap();
    let secret = subscription["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (subscription["id"].as_str().unwrap().to_owned(), secret)
}

async fn place(platform: &Platform, customer: &str, email: Option<&str>) -> String {
    let mut body = json!({"customerId": customer, "lines": [{"sku": "NT-1", "quantity": 1}]});
    if let Some(email) = email {
        body["contactEmail"] = json!(email);
    }
    let placed = platform.place_order(body, None).await;
    assert_eq!(placed.status(), 202);
    let id = placed.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    platform.settled(&id).await;
    id
}

pub(crate) async fn messages(platform: &Platform, query: &str) -> Vec<Value> {
    platform
        .get_json(format!(
            "{}/v1/messages?{query}",
            platform.notifications_url
        ))
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn orders_reach_a_webhook_receiver_signed_and_one_that_was_down_gets_everything_once_back() {
    let receiver = WebhookReceiver::start();
    let smtp = SmtpSink::start();
    let platform = Platform::launch(
        &[],
        &overrides(
            "[0, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50]",
            Some(&smtp),
        ),
        |_| {},
        None,
    )
    .await;
    let (subscription, secret) = subscribe(&platform, &receiver.url, json!(["orders.*"])).await;
    let shown: Value = platform
        .get_json(format!(
            "{}/v1/subscriptions/{subscription}",
            platform.notifications_url
        ))
        .await;
    assert_eq!(shown["status"], "active");
    assert!(shown.get("secret").is_none(), "the secret is shown once");

    platform.product("NT-1", "3.00", 1000).await;
    let first = place(&platform, "nt-a", Some("ada@example.com")).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            receiver.about(&first).len() == 2
        })
        .await,
        "the order's events did not arrive"
    );
    let hooks = receiver.about(&first);
    let types: BTreeSet<String> = hooks
        .iter()
        .map(|h| h.event()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "orders.order.placed.v1".to_owned(),
            "orders.order.confirmed.v1".to_owned()
        ])
    );
    for hook in &hooks {
        assert!(hook.id.starts_with("msg_"));
        hook.verifies(&secret).unwrap();
        assert!(
            hook.verifies("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .is_err()
        );
    }

    // The confirmation went out by e-mail, over SMTP.
    assert!(
        eventually(Duration::from_secs(20), || async {
            !smtp.messages().is_empty()
        })
        .await,
        "no e-mail arrived"
    );
    let mail = smtp.messages().remove(0);
    assert!(mail.contains("To: ada@example.com"), "{mail}");
    assert!(
        mail.contains(&format!("Subject: Your order {first} is confirmed")),
        "{mail}"
    );
    assert!(mail.contains("text/html"), "{mail}");

    // Down for a while: attempts are recorded, and everything arrives once it is back.
    receiver.set(ANSWER_DOWN);
    let mut while_down = Vec::new();
    for n in 0..3 {
        while_down.push(place(&platform, &format!("nt-down-{n}"), None).await);
    }
    let query = format!("subscriptionId={subscription}&status=pending");
    assert!(
        eventually(Duration::from_secs(20), || async {
            messages(&platform, &query)
                .await
                .iter()
                .any(|m| m["attempts"].as_u64() >= Some(2))
        })
        .await,
        "no retries were recorded"
    );
    // Failing in a row, the endpoint's circuit opened (its messages waited, unspent).
    let origin = receiver
        .url
        .trim_end_matches('/')
        .split('/')
        .take(3)
        .collect::<Vec<_>>()
        .join("/");
    assert!(
        eventually(Duration::from_secs(20), || async {
            let ready = platform
                .get_json(format!("{}/health/ready", platform.notifications_url))
                .await;
            ready["breakers"][&origin]["timesOpened"].as_u64() >= Some(1)
        })
        .await,
        "the endpoint's circuit never opened"
    );
    receiver.set(ANSWER_OK);
    assert!(
        eventually(Duration::from_secs(30), || async {
            while_down
                .iter()
                .all(|order| receiver.about(order).len() >= 2)
        })
        .await,
        "what was sent while the receiver was down did not arrive"
    );
    let retried = receiver.about(&while_down[0]).remove(0);
    let attempts = platform
        .get_json(format!(
            "{}/v1/messages/{}/attempts",
            platform.notifications_url, retried.id
        ))
        .await;
    let attempts = attempts["items"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert_eq!(attempts[0]["statusCode"], 503);
    assert_eq!(attempts[0]["response"], "down for maintenance");
    assert!(attempts[0]["latencyMs"].is_u64());
    assert_eq!(attempts.last().unwrap()["statusCode"], 204);
    assert_eq!(attempts.last().unwrap()["succeeded"], true);

    // Every event arrived under one webhook-id, its message's.
    let mut ids_by_event: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for hook in receiver.hooks() {
        ids_by_event
            .entry(hook.event()["id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(hook.id.clone());
    }
    assert!(ids_by_event.values().all(|ids| ids.len() == 1));
    assert_eq!(ids_by_event.len(), 8);

    // A rotated secret: both sign for a day, so receivers can switch over.
    let rotated: Value = post(
        &platform,
        &format!("/v1/subscriptions/{subscription}/rotate-secret"),
    )
    .await
    .json()
    .await
    .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let after = place(&platform, "nt-rotated", None).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            receiver.about(&after).len() == 2
        })
        .await
    );
    let hook = receiver.about(&after).remove(0);
    assert_eq!(hook.signature.split(' ').count(), 2, "{}", hook.signature);
    hook.verifies(&new_secret).unwrap();
    hook.verifies(&secret).unwrap();

    let seen = platform.stop().await;
    assert!(seen.contains("orders.order.confirmed.v1"));
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_disabled_and_its_failed_messages_are_sent_again_by_hand()
{
    let failing = WebhookReceiver::start();
    failing.set(ANSWER_BROKEN);
    let watcher = WebhookReceiver::start();
    let mut settings = overrides("[0, 20]", None);
    // Disabled at the first failure after one that started the failing period.
    settings.push(("webhooks.disable_after_failing_ms", "1".to_owned()));
    let platform = Platform::launch(&[], &settings, |_| {}, None).await;
    let started = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (subscription, secret) = subscribe(
        &platform,
        &failing.url,
        json!(["orders.order.confirmed.v1"]),
    )
    .await;
    let (_, watcher_secret) = subscribe(&platform, &watcher.url, json!(["notifications.*"])).await;
    platform.product("NT-1", "3.00", 1000).await;

    let first = place(&platform, "nt-fail-1", None).await;
    let failed_query = format!("subscriptionId={subscription}&status=failed");
    assert!(
        eventually(Duration::from_secs(20), || async {
            messages(&platform, &failed_query).await.len() == 1
        })
        .await,
        "the message did not fail after its last attempt"
    );
    let failed = messages(&platform, &failed_query).await.remove(0);
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["lastAttempt"]["statusCode"], 500);
    assert_eq!(failed["payload"]["subject"], first);

    // Failing still: the endpoint is disabled, says why, and the platform says so.
    let second = place(&platform, "nt-fail-2", None).await;
    let url = format!(
        "{}/v1/subscriptions/{subscription}",
        platform.notifications_url
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            platform.get_json(url.clone()).await["status"] == "disabled"
        })
        .await,
        "the endpoint was not disabled"
    );
    let shown = platform.get_json(url.clone()).await;
    assert!(
        shown["disabledReason"].as_str().unwrap().contains("500"),
        "{shown}"
    );
    // The operator sees it in the metrics too: each refused attempt, and one endpoint
    // disabled and failing.
    let figures = crate::metrics::scrape(&platform, &platform.notifications_url).await;
    let subscription_label = format!(r#"platform_subscription_id="{subscription}""#);
    assert!(
        crate::metrics::total(
            &figures,
            "platform_webhook_attempts_total",
            &[
                &subscription_label,
                r#"platform_outcome="refused""#,
                r#"http_response_status_code="500""#
            ]
        ) >= 2.0,
        "{figures}"
    );
    assert_eq!(
        crate::metrics::total(
            &figures,
            "platform_webhook_endpoints",
            &[
                r#"platform_endpoint_failing="true""#,
                r#"platform_endpoint_status="disabled""#
            ]
        ),
        1.0,
        "{figures}"
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            !watcher.hooks().is_empty()
        })
        .await,
        "notifications.endpoint.disabled.v1 was not delivered"
    );
    let disabled = watcher.hooks().remove(0);
    disabled.verifies(&watcher_secret).unwrap();
    assert_eq!(
        disabled.event()["type"],
        "notifications.endpoint.disabled.v1"
    );
    assert_eq!(
        disabled.event()["data"]["subscriptionId"],
        subscription.as_str()
    );

    // Fixed and resumed: a failed message sent again by hand arrives with its webhook-id;
    // recover sends the rest.
    failing.set(ANSWER_OK);
    let resumed = post(
        &platform,
        &format!("/v1/subscriptions/{subscription}/resume"),
    )
    .await;
    assert_eq!(resumed.status(), 200);
    let retried = post(
        &platform,
        &format!("/v1/messages/{}/retry", failed["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(retried.status(), 202);
    assert!(
        eventually(Duration::from_secs(20), || async {
            failing.about(&first).len() == 1
        })
        .await,
        "the retried message did not arrive"
    );
    let hook = failing.about(&first).remove(0);
    assert_eq!(hook.id, failed["id"].as_str().unwrap());
    hook.verifies(&secret).unwrap();
    let recovered: Value = post(
        &platform,
        &format!("/v1/subscriptions/{subscription}/recover?since={started}"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(recovered["recovered"].as_u64().is_some(), "{recovered}");
    assert!(
        eventually(Duration::from_secs(20), || async {
            failing.about(&second).len() == 1
        })
        .await,
        "the second order's message did not arrive after recover"
    );
    // The attempt is recorded after the receiver has answered: wait for the record.
    let attempts_url = format!(
        "{}/v1/messages/{}/attempts",
        platform.notifications_url,
        failed["id"].as_str().unwrap()
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            let attempts = platform.get_json(attempts_url.clone()).await;
            attempts["items"]
                .as_array()
                .is_some_and(|items| items.len() >= 3)
        })
        .await,
        "the retried attempt was not recorded"
    );
    let attempts = platform.get_json(attempts_url).await;
    let items = attempts["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{attempts}");
    assert_eq!(items[2]["trigger"], "manual", "{attempts}");
    platform.stop().await;
}

/// Notifications alone, mailing to an SMTP server, with a webhook receiver at hand.
async fn notifications_with_mail() -> (WebhookReceiver, SmtpSink, Platform) {
    let receiver = WebhookReceiver::start();
    let smtp = SmtpSink::start();
    let platform = Platform::launch(
        &["notifications"],
        &overrides("[0, 50]", Some(&smtp)),
        |_| {},
        None,
    )
    .await;
    (receiver, smtp, platform)
}

#[tokio::test]
async fn a_duplicate_event_sends_no_second_webhook_or_mail() {
    let (receiver, smtp, platform) = notifications_with_mail().await;
    let (_, _) = subscribe(
        &platform,
        &receiver.url,
        json!(["orders.order.confirmed.v1", "orders.order.cancelled.v1"]),
    )
    .await;
    // A publisher without duplicate detection, so that the event really arrives twice.
    let mut settings = platform.settings.clone();
    settings.bus.duplicate_window_seconds = 0;
    let bus = common::runtime::adapters::open_bus(&settings).unwrap();
    let data = json!({"orderId": "dup-1", "customerId": "c", "contactEmail": "bob@example.com"});
    let confirmed =
        common::bus::CloudEvent::new("orders", "orders.order.confirmed.v1", "dup-1", data.clone());
    for _ in 0..2 {
        bus.publish(
            common::bus::topics::ORDERS,
            common::bus::Message::new(confirmed.clone()),
        )
        .await
        .unwrap();
    }
    // Handled after both copies (same subject, in order).
    let cancelled =
        common::bus::CloudEvent::new("orders", "orders.order.cancelled.v1", "dup-1", data);
    bus.publish(
        common::bus::topics::ORDERS,
        common::bus::Message::new(cancelled.clone()),
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            let hooks = receiver.about("dup-1");
            hooks
                .iter()
                .any(|h| h.event()["id"] == cancelled.id.as_str())
                && hooks
                    .iter()
                    .any(|h| h.event()["id"] == confirmed.id.as_str())
                && smtp.messages().iter().any(|m| m.contains("cancelled"))
        })
        .await,
        "the events did not arrive"
    );
    let confirmations = receiver
        .about("dup-1")
        .into_iter()
        .filter(|h| h.event()["id"] == confirmed.id.as_str())
        .count();
    assert_eq!(confirmations, 1, "a duplicate event was delivered twice");
    let confirmation_mails = smtp
        .messages()
        .iter()
        .filter(|m| m.contains("is confirmed"))
        .count();
    assert_eq!(confirmation_mails, 1, "a duplicate event was mailed twice");
    platform.stop().await;
}

#[tokio::test]
async fn kill_9_mid_delivery_loses_no_webhook_or_mail() {
    let receiver = WebhookReceiver::start();
    receiver.set(ANSWER_SLOW);
    let smtp = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        (
            "NOTIFICATIONS__WEBHOOKS__ALLOW_PRIVATE_TARGETS",
            "true".to_owned(),
        ),
        // A killed sender's hold on a message ends after 3 s (twice this, and a second).
        ("NOTIFICATIONS__WEBHOOKS__TIMEOUT_MS", "1000".to_owned()),
        (
            "NOTIFICATIONS__WEBHOOKS__RETRY_SCHEDULE_MS",
            "0,50,50,50,50,50,50".to_owned(),
        ),
        ("NOTIFICATIONS__WEBHOOKS__POLL_INTERVAL_MS", "50".to_owned()),
        ("NOTIFICATIONS__EMAIL__KIND", "smtp".to_owned()),
        ("NOTIFICATIONS__EMAIL__SMTP__HOST", "127.0.0.1".to_owned()),
        ("NOTIFICATIONS__EMAIL__SMTP__PORT", smtp.port.to_string()),
        ("NOTIFICATIONS__EMAIL__SMTP__SECURITY", "none".to_owned()),
    ];
    let token = token(&common::config::Settings::defaults());
    let client = reqwest::Client::new();
    let mut first = crate::crash::up(dir.path(), &env).await;
    let created = client
        .post(format!("{}/v2/products", first.catalog))
        .bearer_auth(&token)
        .json(&json!({"sku": "NT-K", "name": "k", "category": "k", "price": {"amount": "1.00", "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let counted = client
        .put(format!("{}/v2/products/NT-K/stock", first.catalog))
        .bearer_auth(&token)
        .json(&json!({"onHand": 100000}))
        .send()
        .await
        .unwrap();
    assert_eq!(counted.status(), 200);
    let subscribed = client
        .post(format!("{}/v1/subscriptions", first.notifications))
        .bearer_auth(&token)
        .json(&json!({"url": receiver.url, "eventTypes": ["orders.*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(subscribed.status(), 201);

    let placing = {
        let (client, url, token) = (client.clone(), first.orders.clone(), token.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..200 {
                let sent = client
                    .post(format!("{url}/v1/orders"))
                    .bearer_auth(&token)
                    .json(&json!({"customerId": format!("k-{}", n % 5), "contactEmail": format!("k{n}@example.com"),
                        "lines": [{"sku": "NT-K", "quantity": 1}]}))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 202 => acknowledged.push(
                        response.json::<Value>().await.unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    ),
                    _ => break,
                }
            }
            acknowledged
        })
    };
    assert!(
        eventually(Duration::from_secs(60), || async {
            receiver.hooks().len() >= 10
        })
        .await,
        "no deliveries before the kill"
    );
    first.child.kill().unwrap(); // SIGKILL: deliveries and mails in flight
    first.child.wait().unwrap();
    let acknowledged = placing.await.unwrap();
    assert!(acknowledged.len() >= 5, "{acknowledged:?}");

    let mut second = crate::crash::up(dir.path(), &env).await;
    receiver.set(ANSWER_OK);
    let everything_arrived = eventually(Duration::from_secs(120), || {
        let (client, url, token) = (client.clone(), second.orders.clone(), token.clone());
        let (receiver, smtp, acknowledged) = (&receiver, &smtp, &acknowledged);
        async move {
            let orders = crate::crash::all_orders(&client, &url, &token).await;
            if orders.iter().any(|o| o["status"] == "pending") {
                return false;
            }
            let mails = smtp.messages();
            acknowledged.iter().all(|id| {
                let order = orders.iter().find(|o| o["id"] == id.as_str());
                let settled = order.map(|o| o["status"].as_str().unwrap_or("").to_owned());
                let types: BTreeSet<String> = receiver
                    .about(id)
                    .iter()
                    .map(|h| h.event()["type"].as_str().unwrap_or("").to_owned())
                    .collect();
                types.len() == 2
                    && settled.is_some_and(|status| {
                        status != "confirmed" || mails.iter().any(|m| m.contains(id.as_str()))
                    })
            })
        }
    })
    .await;
    assert!(
        everything_arrived,
        "a webhook or a mail was lost across kill -9"
    );
    // Sent again or not, each event is one message: one webhook-id, the same each time.
    let mut ids_by_event: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for hook in receiver.hooks() {
        ids_by_event
            .entry(hook.event()["id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(hook.id.clone());
    }
    assert!(
        ids_by_event.values().all(|ids| ids.len() == 1),
        "{ids_by_event:?}"
    );
    let hooks = receiver.hooks();
    let distinct: BTreeSet<&str> = hooks.iter().map(|h| h.id.as_str()).collect();
    eprintln!(
        "{} orders acknowledged, {} deliveries of {} messages, {} mails",
        acknowledged.len(),
        hooks.len(),
        distinct.len(),
        smtp.messages().len()
    );
    // A mail sent again carries the same Message-ID.
    let mut message_ids_by_order: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for mail in smtp.messages() {
        let header = |name: &str| {
            mail.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                .unwrap_or_default()
        };
        let order = acknowledged
            .iter()
            .find(|id| mail.contains(id.as_str()))
            .cloned()
            .unwrap_or_default();
        message_ids_by_order
            .entry(order)
            .or_default()
            .insert(header("Message-ID:"));
    }
    assert!(
        message_ids_by_order.values().all(|ids| ids.len() == 1),
        "{message_ids_by_order:?}"
    );
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

#[tokio::test]
async fn a_slow_endpoint_delays_no_other_and_an_ordered_one_gets_events_in_order() {
    let stuck = WebhookReceiver::start();
    stuck.set(ANSWER_HOLD);
    let fast = WebhookReceiver::start();
    let ordered = WebhookReceiver::start();
    let mut settings = overrides("[0, 20]", None);
    // Held deliveries do not time out while the test looks.
    settings.push(("webhooks.timeout_ms", "60000".to_owned()));
    let platform = Platform::launch(&["notifications"], &settings, |_| {}, None).await;
    subscribe(&platform, &stuck.url, json!(["orders.*"])).await;
    subscribe(&platform, &fast.url, json!(["orders.*"])).await;
    let created = call(
        &platform,
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": ordered.url, "eventTypes": ["orders.*"], "ordered": true})),
    )
    .await;
    assert_eq!(created.status(), 201);
    let bus = common::runtime::adapters::open_bus(&platform.settings).unwrap();
    // 200 events about 10 orders, 20 each (the quantity counts them); the stuck endpoint
    // holds every one it is sent until let go.
    let events: Vec<common::bus::CloudEvent> = (0..200)
        .map(|n| {
            let order = format!("ord-{}", n % 10);
            common::bus::CloudEvent::new(
                "orders",
                "orders.order.placed.v1",
                &order,
                json!({"orderId": order, "customerId": "c", "lines": [{"sku": "A", "quantity": n / 10 + 1}]}),
            )
        })
        .collect();
    bus.publish_many(
        common::bus::topics::ORDERS,
        events
            .iter()
            .cloned()
            .map(common::bus::Message::new)
            .collect(),
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            fast.hooks().len() == 200
        })
        .await,
        "the fast endpoint did not get everything"
    );
    assert!(
        stuck.hooks().is_empty(),
        "the held endpoint let one through"
    );
    stuck.set(ANSWER_OK);
    assert!(
        eventually(Duration::from_secs(60), || async {
            stuck.hooks().len() == 200 && ordered.hooks().len() == 200
        })
        .await
    );
    // About each order, the events came in the order they happened.
    let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for hook in ordered.hooks() {
        let event = hook.event();
        seen.entry(event["subject"].as_str().unwrap().to_owned())
            .or_default()
            .push(event["data"]["lines"][0]["quantity"].as_i64().unwrap());
    }
    assert_eq!(seen.len(), 10);
    for (order, sequence) in &seen {
        assert_eq!(
            sequence,
            &(1..=20).collect::<Vec<i64>>(),
            "{order}: the ordered endpoint got events out of order"
        );
    }
    platform.stop().await;
}

#[tokio::test]
async fn private_targets_and_bad_subscriptions_are_refused_with_the_field_named() {
    let platform = Platform::launch(
        &["notifications"],
        &[("email.kind", "off".to_owned())],
        |_| {},
        None,
    )
    .await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/",
        "http://[::1]/",
        "ftp://example.com/",
        "https://user:pw@example.com/",
    ] {
        let refused = call(
            &platform,
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({"url": url, "eventTypes": ["orders.*"]})),
        )
        .await;
        assert_eq!(refused.status(), 422, "{url}");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "url", "{problem}");
    }
    for (event_types, why) in [
        (json!(["billing.*"]), "matches no event type"),
        (json!(["orders.order.shipped.v1"]), "is not an event type"),
        (json!(["orders.*", "orders.*"]), "appears twice"),
        (json!([]), "must hold"),
    ] {
        let refused = call(
            &platform,
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({"url": "https://example.com/hook", "eventTypes": event_types})),
        )
        .await;
        assert_eq!(refused.status(), 422);
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "eventTypes", "{problem}");
        assert!(problem.to_string().contains(why), "{problem}");
    }
    for path in [
        "/v1/subscriptions/not-a-uuid",
        "/v1/messages/msg_nope",
        "/v1/messages/../etc",
    ] {
        let unknown = call(&platform, reqwest::Method::GET, path, None).await;
        assert_eq!(unknown.status(), 404, "{path}");
    }
    let missing = post(
        &platform,
        &format!("/v1/subscriptions/{}/recover?since=yesterday", uuid_like()),
    )
    .await;
    assert_eq!(missing.status(), 422);
    platform.stop().await;
}

fn uuid_like() -> &'static str {
    "0190f3a2-7c1e-7a4b-9c3d-2e4f5a6b7c8d"
}

#[tokio::test]
async fn a_paused_endpoint_gets_what_waited_when_resumed_and_mail_is_written_as_eml_files() {
    let paused = WebhookReceiver::start();
    let active = WebhookReceiver::start();
    let mut settings = overrides("[0, 20]", None);
    settings.push(("email.kind", "files".to_owned()));
    let platform = Platform::launch(&["notifications"], &settings, |_| {}, None).await;
    let (paused_id, _) = subscribe(&platform, &paused.url, json!(["orders.*"])).await;
    subscribe(&platform, &active.url, json!(["orders.*"])).await;
    let answer = post(&platform, &format!("/v1/subscriptions/{paused_id}/pause")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap()["status"], "paused");

    let bus = common::runtime::adapters::open_bus(&platform.settings).unwrap();
    let event = common::bus::CloudEvent::new(
        "orders",
        "orders.order.rejected.v1",
        "eml-1",
        json!({"orderId": "eml-1", "customerId": "c", "reason": "insufficient stock",
               "shortages": [{"sku": "A-1", "requested": 3, "available": 1}],
               "contactEmail": "eve@example.com"}),
    );
    bus.publish(
        common::bus::topics::ORDERS,
        common::bus::Message::new(event),
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            active.hooks().len() == 1
        })
        .await,
        "the active endpoint did not get the event"
    );
    let waiting = messages(&platform, &format!("subscriptionId={paused_id}")).await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0]["status"], "pending");
    assert_eq!(waiting[0]["attempts"], 0);
    assert!(paused.hooks().is_empty());
    let answer = post(&platform, &format!("/v1/subscriptions/{paused_id}/resume")).await;
    assert_eq!(answer.status(), 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            paused.hooks().len() == 1
        })
        .await,
        "what waited was not sent on resume"
    );
    // Paused again and deleted: what waits for it is failed, and stays visible.
    post(&platform, &format!("/v1/subscriptions/{paused_id}/pause")).await;
    let second = common::bus::CloudEvent::new(
        "orders",
        "orders.order.cancelled.v1",
        "eml-2",
        json!({"orderId": "eml-2", "customerId": "c"}),
    );
    bus.publish(
        common::bus::topics::ORDERS,
        common::bus::Message::new(second),
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            active.hooks().len() == 2
        })
        .await
    );
    let deleted = call(
        &platform,
        reqwest::Method::DELETE,
        &format!("/v1/subscriptions/{paused_id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let failed = messages(
        &platform,
        &format!("subscriptionId={paused_id}&status=failed"),
    )
    .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["eventType"], "orders.order.cancelled.v1");

    // The rejection went out as a .eml file in the data folder.
    let folder = platform.dir.path().join("notifications-mail");
    let written = || {
        std::fs::read_dir(&folder)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(20), || async { written().len() == 1 }).await,
        "no .eml file was written"
    );
    let mail = written().remove(0);
    assert!(mail.contains("To: eve@example.com"), "{mail}");
    assert!(mail.contains("could not be accepted"), "{mail}");
    assert!(mail.contains("A-1: 3 asked for, 1 available"), "{mail}");
    platform.stop().await;
}

/// Publishes an order event on the bus notifications shares, as the orders service would.
async fn publish_order_event(bus: &common::bus::SharedBus, event_type: &str, order: &str) {
    let mut data = json!({"orderId": order, "customerId": "c"});
    if event_type == "orders.order.placed.v1" {
        data["lines"] = json!([{"sku": "W-1", "quantity": 1}]);
    } else {
        data["contactEmail"] = json!("ann@example.com");
    }
    let event = common::bus::CloudEvent::new("orders", event_type, order, data);
    bus.publish(
        common::bus::topics::ORDERS,
        common::bus::Message::new(event),
    )
    .await
    .unwrap();
}

async fn consumed(platform: &Platform, subscription: &str) -> f64 {
    let text = crate::metrics::scrape(platform, &platform.notifications_url).await;
    crate::metrics::total(
        &text,
        "messaging_client_consumed_messages_total",
        &[&format!(
            r#"messaging_destination_subscription_name="{subscription}""#
        )],
    )
}

#[tokio::test]
async fn notifications_receives_only_the_events_its_endpoints_and_its_mail_want() {
    let (receiver, smtp, platform) = notifications_with_mail().await;
    let bus = common::runtime::adapters::open_bus(&platform.settings).unwrap();
    let mails = || {
        smtp.messages()
            .iter()
            .filter(|m| m.contains("is confirmed"))
            .count()
    };

    // No endpoint: of an order's events only the confirmation is let in, for its mail. The
    // placement goes first on the same order, so it would have been handled first.
    publish_order_event(&bus, "orders.order.placed.v1", "wanted-1").await;
    publish_order_event(&bus, "orders.order.confirmed.v1", "wanted-1").await;
    assert!(
        eventually(Duration::from_secs(20), || async { mails() == 1 }).await,
        "the confirmation was not mailed"
    );
    assert_eq!(consumed(&platform, "notifications-orders").await, 1.0);

    // An endpoint that wants placements: from its creation on, they are let in too.
    subscribe(&platform, &receiver.url, json!(["orders.order.placed.v1"])).await;
    publish_order_event(&bus, "orders.order.placed.v1", "wanted-2").await;
    publish_order_event(&bus, "orders.order.confirmed.v1", "wanted-2").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            mails() == 2 && !receiver.about("wanted-2").is_empty()
        })
        .await,
        "the placement was not delivered or the confirmation not mailed"
    );
    assert_eq!(consumed(&platform, "notifications-orders").await, 3.0);
    assert!(receiver.about("wanted-1").is_empty());
    platform.stop().await;
}
