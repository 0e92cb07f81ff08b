//! Spans reach an OTLP/HTTP endpoint when one is configured. Its own test binary: it
//! installs the process-wide subscriber through `telemetry::init`, as a service binary does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_set() {
    let received: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let sink = received.clone();
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().route(
            "/v1/traces",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let content_type = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                sink.lock().unwrap().push((content_type, body.len()));
                async { HttpResponse::Ok().finish() }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let server_handle = server.handle();
    tokio::spawn(server);

    let mut settings = common::config::Settings::defaults().telemetry;
    settings.otlp_endpoint = endpoint;
    settings.log_level = "error".into();
    let guard = common::telemetry::init(&settings, "otlp-test").unwrap();
    {
        let span = tracing::info_span!("exported.work", answer = 42);
        let _entered = span.enter();
        assert!(common::telemetry::current_trace_id().is_some());
    }
    // Dropping the guard flushes what the batch exporter holds (on its own thread).
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no export arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (content_type, size) = received.lock().unwrap()[0].clone();
    assert_eq!(content_type, "application/x-protobuf");
    assert!(size > 0);
    server_handle.stop(true).await;
}
