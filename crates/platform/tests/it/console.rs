//! The operations console in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver) by fantoccini. A poison message is replayed and discarded from
//! the page, an import is followed to completed with its bad row, and a failed webhook is
//! retried from the page. With `CONSOLE_SCREENSHOTS=<folder>` the pages are saved as PNG
//! (docs/console/ holds the ones the docs show).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::bus::topics;
use common::testing::eventually;
use fantoccini::{Client, ClientBuilder, Locator};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Platform, SECRET};
use crate::notifications::{ANSWER_BROKEN, ANSWER_OK, WebhookReceiver};

struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Chromium through a chromedriver of its own, both installed by `tools/browser/install.sh`
    /// when missing.
    async fn start() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let installed = Command::new("bash")
            .arg(root.join("tools/browser/install.sh"))
            .status()
            .expect("running tools/browser/install.sh");
        assert!(
            installed.success(),
            "Chromium and chromedriver could not be installed"
        );
        let port = common::testing::free_port().unwrap();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let capabilities: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }))
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client: std::sync::Arc<std::sync::Mutex<Option<Client>>> = Default::default();
        let connected = eventually(Duration::from_secs(30), || {
            let (url, capabilities, client) = (url.clone(), capabilities.clone(), client.clone());
            async move {
                match ClientBuilder::rustls()
                    .expect("a TLS configuration")
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                {
                    Ok(connected) => {
                        *client.lock().unwrap() = Some(connected);
                        true
                    }
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(connected, "chromedriver did not take a session");
        let client = client.lock().unwrap().take().unwrap();
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// Reloads `url` until `css` is on it.
    async fn wait_for(&self, url: &str, css: &str) -> bool {
        eventually(Duration::from_secs(30), || async {
            self.open(url).await;
            self.has(css).await
        })
        .await
    }

    /// The text of `css`, waiting for it to appear (a click's navigation may still run).
    async fn text(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|_| panic!("nothing at {css}"))
            .text()
            .await
            .unwrap()
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|_| panic!("nothing to click at {css}"))
            .click()
            .await
            .unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let Ok(folder) = std::env::var("CONSOLE_SCREENSHOTS") else {
            return;
        };
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(PathBuf::from(folder).join(format!("{name}.png")), png).unwrap();
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test]
async fn an_operator_replays_dead_letters_follows_an_import_and_retries_a_webhook_from_the_console()
{
    let receiver = WebhookReceiver::start();
    receiver.set(ANSWER_BROKEN);
    let mut overrides = crate::notifications::overrides("[0]", None);
    overrides.extend(crate::imports::import_overrides());
    let platform = Platform::launch(&[], &overrides, |_| {}, None).await;
    let urls: BTreeMap<String, String> = ["catalog", "orders", "sync", "notifications"]
        .into_iter()
        .map(|name| (name.to_owned(), platform.url_of(name)))
        .collect();
    let services = platform::console::Services::new(
        urls,
        platform::console::TokenSource::Development {
            secret: SecretString::from(SECRET.to_owned()),
            auth: platform.settings.auth.clone(),
        },
    )
    .unwrap();
    let console = platform::console::serve(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        platform::console::ConsoleOptions {
            services,
            sample_every: Duration::from_millis(200),
        },
    )
    .unwrap();
    let browser = Browser::start().await;
    let page = |path: &str| format!("{}{path}", console.url);

    // The overview: every service ready, the orders counted.
    let (subscription, _) = crate::notifications::subscribe(
        &platform,
        &receiver.url,
        json!(["orders.order.confirmed.v1"]),
    )
    .await;
    platform.product("CON-1", "4.00", 100).await;
    let placed = platform
        .place("c-console", json!([{"sku": "CON-1", "quantity": 1}]), None)
        .await;
    let order: Value = placed.json().await.unwrap();
    let order_id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(platform.settled(&order_id).await["status"], "confirmed");
    assert!(
        browser
            .wait_for(&page("/"), r#"#order-counts tr[data-status="confirmed"]"#)
            .await
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            browser.open(&page("/")).await;
            browser
                .text(r#"#order-counts tr[data-status="confirmed"] .count"#)
                .await
                == "1"
        })
        .await,
        "the confirmed order was not counted"
    );
    for service in ["catalog", "orders", "sync", "notifications"] {
        let row = browser
            .text(&format!(r#"#services tr[data-service="{service}"]"#))
            .await;
        assert!(row.contains("ready"), "{row}");
    }
    browser.screenshot("overview").await;

    // A poison message shows with its reason and payload; replayed, it is handled again
    // (and dead-lettered again, being poison); discarded, it is gone.
    let bus = common::runtime::adapters::open_bus(&platform.settings).unwrap();
    let poison = platform.publish_poison("o-console").await;
    // Catalog's copy (notifications takes order events too, and dead-letters its own).
    let row = format!(
        r#"section[data-service="catalog"] tr.dead-letter[data-id="{}"]"#,
        poison.id
    );
    assert!(browser.wait_for(&page("/dead-letters"), &row).await);
    let shown = browser.text(&row).await;
    assert!(shown.contains("data is malformed"), "{shown}");
    assert!(shown.contains(r#""orderId": 5"#), "{shown}");
    browser.screenshot("dead-letters").await;
    browser.click(&format!("{row} button.replay")).await;
    assert!(browser.text("#notice").await.contains("replayed"));
    let handled_twice = eventually(Duration::from_secs(30), || async {
        let figures = crate::metrics::scrape(&platform, &platform.catalog_url).await;
        crate::metrics::total(
            &figures,
            "platform_messaging_handler_outcomes_total",
            &[r#"platform_outcome="dead-lettered""#],
        ) == 2.0
    })
    .await;
    assert!(handled_twice, "the replayed message was not handled again");
    assert!(browser.wait_for(&page("/dead-letters"), &row).await);
    browser.click(&format!("{row} button.discard")).await;
    assert!(browser.text("#notice").await.contains("discarded"));
    assert!(!browser.has(&row).await);
    assert!(
        bus.dead_letters(topics::ORDERS, "catalog", 10)
            .await
            .unwrap()
            .is_empty()
    );

    // An import, followed until completed, with its bad row.
    let mut feed = crate::imports::feed(1500, "EUR");
    feed.push_str("BAD-PRICE,Too precise,,imports,1.005,EUR,1\n");
    let job = crate::imports::upload(&platform, "console.csv", "text/csv", feed).await;
    let job_id = job["id"].as_str().unwrap();
    browser.open(&page("/imports")).await;
    assert!(
        browser
            .has(&format!(r#"section.import[data-id="{job_id}"]"#))
            .await
    );
    let completed = format!(r#"section.import[data-id="{job_id}"][data-state="completed"]"#);
    assert!(browser.wait_for(&page("/imports"), &completed).await);
    let shown = browser.text(&completed).await;
    assert!(shown.contains("1501 of 1501 rows"), "{shown}");
    assert!(shown.contains("100%"), "{shown}");
    let bad_rows = browser.text(&format!("{completed} table.bad-rows")).await;
    assert!(
        bad_rows.contains("1502") && bad_rows.contains("price"),
        "{bad_rows}"
    );
    browser.screenshot("imports").await;

    // The webhook failed (one attempt, the endpoint answering 500); back up, it is retried
    // from the page and arrives.
    let failed = eventually(Duration::from_secs(30), || async {
        crate::notifications::messages(
            &platform,
            &format!("subscriptionId={subscription}&status=failed"),
        )
        .await
        .len()
            == 1
    })
    .await;
    assert!(failed, "the webhook message did not fail");
    receiver.set(ANSWER_OK);
    let message = format!(r#"section.subscription[data-id="{subscription}"] tr.message"#);
    assert!(browser.wait_for(&page("/webhooks"), &message).await);
    assert!(browser.text(&message).await.contains("failed"));
    browser.screenshot("webhooks").await;
    browser.click(&format!("{message} button.retry")).await;
    assert!(browser.text("#notice").await.contains("being sent again"));
    assert!(
        eventually(Duration::from_secs(30), || async {
            receiver.about(&order_id).len() == 1
        })
        .await,
        "the retried webhook did not arrive"
    );
    assert!(
        browser
            .wait_for(
                &page("/webhooks"),
                &format!(r#"{message} .status.delivered"#)
            )
            .await
    );

    // The connectors page answers too (none registered here).
    browser.open(&page("/connectors")).await;
    assert!(browser.text("main").await.contains("No connectors"));

    // A form posted from another site is refused.
    let forged = reqwest::Client::new()
        .post(page("/webhooks/messages/x/retry"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    browser.close().await;
    console.stop().await;
    platform.stop().await;
}
