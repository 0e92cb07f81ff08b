//! The real `catalog` binary, configured by environment, killed with SIGKILL mid-write:
//! every acknowledged write is there after a restart.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) url: String,
}

pub(crate) async fn start_binary(data_dir: &std::path::Path, port: u16) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_catalog"))
        .env("CATALOG__HTTP__PORT", port.to_string())
        .env("CATALOG__DATA_DIR", data_dir)
        .env("PLATFORM__AUTH__HS256_SECRET", SECRET)
        .env("PLATFORM__RATE_LIMIT__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(30), || {
        let request = client.get(format!("{url}/health/ready")).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(ready, "catalog binary did not become ready");
    Process { child, url }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_for(&test_settings(dir.path()), ALL);
    let client = reqwest::Client::new();

    let mut process = start_binary(dir.path(), common::testing::free_port().unwrap()).await;
    // Writers keep going while the process is killed; only 201s count as acknowledged.
    let writer = {
        let (client, url, token) = (client.clone(), process.url.clone(), token.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..10_000 {
                let sku = format!("K-{n}");
                let sent = client
                    .post(format!("{url}/v2/products"))
                    .bearer_auth(&token)
                    .json(&product_v2(&sku, "k", "1.00"))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 201 => acknowledged.push(sku),
                    _ => break,
                }
            }
            acknowledged
        })
    };
    let probe = client.clone();
    let url = process.url.clone();
    let probe_token = token.clone();
    let some_written = eventually(Duration::from_secs(30), || {
        let request = probe
            .get(format!("{url}/v2/products?limit=30"))
            .bearer_auth(&probe_token)
            .send();
        async move {
            match request.await {
                Ok(response) => response.json::<Value>().await.is_ok_and(|page| {
                    page["items"]
                        .as_array()
                        .is_some_and(|items| items.len() >= 30)
                }),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(some_written);
    process.child.kill().unwrap(); // SIGKILL
    process.child.wait().unwrap();
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged.len() >= 30);

    let mut restarted = start_binary(dir.path(), common::testing::free_port().unwrap()).await;
    for sku in &acknowledged {
        let response = client
            .get(format!("{}/v2/products/{sku}", restarted.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{sku} was acknowledged but lost");
    }
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}
