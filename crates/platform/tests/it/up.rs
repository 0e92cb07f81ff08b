//! `platform up` as a user runs it: a mistyped setting stops it with the key named, and
//! `--only` starts a subset. (`crash.rs` runs it on non-default ports for every service:
//! orders prices from the catalog on whatever port that one bound.)

use std::process::{Command, Stdio};
use std::time::Duration;

use futures::FutureExt;

use crate::helpers::eventually;

fn platform() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_platform"));
    command.env("RUST_LOG", "error").stdin(Stdio::null());
    command
}

#[test]
fn an_unknown_key_stops_platform_up_and_names_the_nearest_known_one() {
    let dir = tempfile::tempdir().unwrap();
    for (variable, unknown, nearest) in [
        (
            "PLATFORM__BUS__POL_INTERVAL_MS",
            "bus.pol_interval_ms",
            "bus.poll_interval_ms",
        ),
        ("ORDERS__CATALOG__ULR", "catalog.ulr", "catalog.url"),
        // Shared variables reach every service: a service's own key is refused there.
        ("PLATFORM__CATALOG__URL", "catalog.url", "data_dir"),
    ] {
        let output = platform()
            .args(["up", "--data-dir"])
            .arg(dir.path())
            .env(variable, "5")
            .env("CATALOG__HTTP__PORT", "0")
            .env("ORDERS__HTTP__PORT", "0")
            .env("SYNC__HTTP__PORT", "0")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{variable} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("`{unknown}`")) && stderr.contains(variable),
            "{stderr}"
        );
        if variable != "PLATFORM__CATALOG__URL" {
            assert!(stderr.contains(&format!("`{nearest}`")), "{stderr}");
        }
    }
}

#[test]
fn an_unknown_key_in_a_config_file_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/orders.toml"),
        "[catalog]\ntimeout_msec = 100\n",
    )
    .unwrap();
    let output = platform()
        .current_dir(dir.path())
        .args(["up", "--only", "orders"])
        .env("ORDERS__HTTP__PORT", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`catalog.timeout_msec`") && stderr.contains("`catalog.timeout_ms`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn only_starts_the_services_named() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog_port, orders_port) = (
        common::testing::free_port().unwrap(),
        common::testing::free_port().unwrap(),
    );
    let mut child = platform()
        .args(["up", "--only", "catalog", "--data-dir"])
        .arg(dir.path())
        .env("CATALOG__HTTP__PORT", catalog_port.to_string())
        .env("ORDERS__HTTP__PORT", orders_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(60), || {
        let request = client
            .get(format!("http://127.0.0.1:{catalog_port}/health/ready"))
            .send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(ready, "catalog did not start");
    assert!(
        client
            .get(format!("http://127.0.0.1:{orders_port}/health/live"))
            .send()
            .await
            .is_err(),
        "orders answered though only catalog was asked for"
    );
    let unknown = platform()
        .args(["up", "--only", "catalgo", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("catalog, orders"));
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn listed(platform: &crate::helpers::Platform) -> usize {
    let url = format!("{}/v2/products?category=e2e", platform.catalog_url);
    platform.get_json(url).await["items"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn views_rebuild_restores_the_product_list() {
    let running = crate::helpers::Platform::start().await;
    let platform = &running;
    for n in 0..5 {
        platform.product(&format!("VR-{n}"), "1.00", n).await;
    }
    assert!(eventually(Duration::from_secs(10), || listed(platform).map(|n| n == 5)).await);
    let store = common::runtime::adapters::open_store(
        &platform.settings,
        "catalog",
        catalog::catalog::CONTAINERS,
    )
    .await
    .unwrap();
    store
        .delete("product-views", "e2e", "VR-2", None)
        .await
        .unwrap();
    assert_eq!(listed(platform).await, 4);
    let output = self::platform()
        .args(["views", "rebuild", "catalog", "--data-dir"])
        .arg(platform.dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("5 views"));
    assert_eq!(listed(platform).await, 5);
    running.stop().await;
}
