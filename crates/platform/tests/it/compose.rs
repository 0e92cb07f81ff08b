//! docker-compose.yml without Docker: each service's binary started with the environment the
//! compose file gives its container (the volume a scratch folder, the ports free ones, the
//! service names resolved to loopback), readiness checked with the image's own
//! `HEALTHCHECK` command, and an order placed across the four.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// The compose file, as JSON (PyYAML, in the tests' Python tools).
fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docker-compose.yml");
    let output = Command::new(common::testing::python::python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            path,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `${NAME:-default}` as compose reads it with NAME unset.
fn interpolate(value: &str) -> String {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(inner) => inner
            .split_once(":-")
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default(),
        None => value.to_owned(),
    }
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn the_compose_files_command_lines_start_the_platform() {
    let compose = compose();
    let all = compose["services"].as_object().unwrap();
    // The observability profile's own containers: their configuration files are in the repo.
    let (profiled, services): (serde_json::Map<_, _>, serde_json::Map<_, _>) = all
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(_, service)| service.get("profiles").is_some());
    assert_eq!(
        profiled.keys().collect::<Vec<_>>(),
        ["grafana", "otel-collector", "prometheus"]
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (name, service) in &profiled {
        assert_eq!(service["profiles"], json!(["observability"]), "{name}");
        for volume in service["volumes"].as_array().unwrap() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(root.join(source).is_file(), "{name}: {source} is missing");
        }
    }
    assert_eq!(
        services.keys().collect::<Vec<_>>(),
        ["catalog", "notifications", "orders", "sync"]
    );
    // The images' entrypoint is each service's own binary. Built with the workspace's test
    // targets, so that features resolve as for `cargo test --workspace` and what that built
    // is reused (`-p <service>` alone would build every crate again with fewer features).
    let built = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--workspace", "--tests", "--bins"])
        .status()
        .unwrap();
    assert!(built.success());
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug");
    let volume = tempfile::tempdir().unwrap();
    let ports: BTreeMap<String, u16> = services
        .keys()
        .map(|name| (name.clone(), common::testing::free_port().unwrap()))
        .collect();
    // catalog first: the others depend on it being healthy.
    let mut order: Vec<&String> = services.keys().collect();
    order.sort_by_key(|name| services[name.as_str()].get("depends_on").is_some());
    let mut running = Killed(Vec::new());
    let mut secret = String::new();
    for name in order {
        let service = &services[name.as_str()];
        assert_eq!(service["build"]["args"]["SERVICE"], name.as_str());
        assert_eq!(
            service["healthcheck"]["test"],
            json!(["CMD", "/usr/local/bin/service", "healthcheck"])
        );
        let mut environment: BTreeMap<String, String> = service["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), interpolate(v.as_str().unwrap())))
            .collect();
        assert_eq!(environment["PLATFORM__DATA_DIR"], "/data");
        environment.insert(
            "PLATFORM__DATA_DIR".into(),
            volume.path().display().to_string(),
        );
        environment.insert("PLATFORM__HTTP__PORT".into(), ports[name].to_string());
        environment.insert("PLATFORM__HTTP__HOST".into(), "127.0.0.1".into());
        for value in environment.values_mut() {
            for (other, port) in &ports {
                *value = value.replace(&format!("http://{other}:"), "http://127.0.0.1:");
                *value = value.replace(
                    &format!("127.0.0.1:{}", 8081 + index_of(other)),
                    &format!("127.0.0.1:{port}"),
                );
            }
        }
        secret = environment["PLATFORM__AUTH__HS256_SECRET"].clone();
        let binary = bin.join(name);
        let child = Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "error")
            .envs(&environment)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        running.0.push(child);
        let healthy = eventually(Duration::from_secs(60), || {
            let (binary, environment) = (binary.clone(), environment.clone());
            async move {
                Command::new(&binary)
                    .arg("healthcheck")
                    .env_clear()
                    .envs(&environment)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            }
        })
        .await;
        assert!(healthy, "{name} did not become healthy");
    }

    let token = common::auth::mint_dev_token(
        &secrecy::SecretString::from(secret),
        &common::config::Settings::defaults().auth,
        "compose",
        ALL,
        600,
    )
    .unwrap();
    let http = reqwest::Client::new();
    let url = |name: &str| format!("http://127.0.0.1:{}", ports[name]);
    let created = http
        .post(format!("{}/v2/products", url("catalog")))
        .bearer_auth(&token)
        .json(&json!({"sku": "DC-1", "name": "compose", "category": "c", "price": {"amount": "1.00", "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let counted = http
        .put(format!("{}/v2/products/DC-1/stock", url("catalog")))
        .bearer_auth(&token)
        .json(&json!({"onHand": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(counted.status(), 200);
    let placed: Value = http
        .post(format!("{}/v1/orders", url("orders")))
        .bearer_auth(&token)
        .json(&json!({"customerId": "dc", "lines": [{"sku": "DC-1", "quantity": 2}], "contactEmail": "dc@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = placed["id"].as_str().unwrap().to_owned();
    let confirmed = eventually(Duration::from_secs(30), || {
        let request = http
            .get(format!("{}/v1/orders/{id}", url("orders")))
            .bearer_auth(&token)
            .send();
        async move {
            match request.await {
                Ok(answer) => answer
                    .json::<Value>()
                    .await
                    .is_ok_and(|o| o["status"] == "confirmed"),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(
        confirmed,
        "the order was not confirmed across the containers' processes"
    );
    // Notifications, in its own process, mailed the customer into the shared volume.
    let mailed = eventually(Duration::from_secs(30), || async {
        std::fs::read_dir(volume.path().join("notifications-mail"))
            .is_ok_and(|mut entries| entries.next().is_some())
    })
    .await;
    assert!(mailed, "no mail in the volume");
}

/// The port a service has in the compose file (8081 catalog, 8082 orders, 8083 sync, 8084
/// notifications).
fn index_of(service: &str) -> u16 {
    match service {
        "catalog" => 0,
        "orders" => 1,
        "sync" => 2,
        _ => 3,
    }
}
