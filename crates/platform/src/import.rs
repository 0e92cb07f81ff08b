//! `platform import FILE`: uploads a product feed to sync and follows its import with a
//! progress bar until it ends, then prints the summary and the first errors.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// How often the import is looked at while it runs.
const POLL: Duration = Duration::from_millis(250);
/// Errors printed at the end (the import keeps the first 1,000).
const ERRORS_SHOWN: usize = 20;

/// Where and as whom to upload.
pub struct Target {
    /// The sync service, e.g. `http://127.0.0.1:8083`.
    pub url: String,
    pub token: String,
}

/// The content type a feed file is sent with, by its extension.
pub fn content_type(file: &Path) -> anyhow::Result<&'static str> {
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => Ok("text/csv"),
        Some("jsonl" | "ndjson") => Ok("application/x-ndjson"),
        _ => anyhow::bail!(
            "{} is not a feed: the file name must end in .csv, .jsonl or .ndjson",
            file.display()
        ),
    }
}

/// Uploads `file`, follows the import, and returns it as it ended.
pub async fn run(target: &Target, file: &Path, progress: bool) -> anyhow::Result<Value> {
    let content_type = content_type(file)?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("feed")
        .to_owned();
    let opened = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let size = opened.metadata().await?.len();
    let http = reqwest::Client::new();
    let base = target.url.trim_end_matches('/');
    let mut upload_url = url_parse(&format!("{base}/v1/imports"))?;
    upload_url.query_pairs_mut().append_pair("name", &name);
    let bar = if progress {
        ProgressBar::new(size)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "uploading {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )?);
    let uploaded = bar.clone();
    let stream = futures_stream(opened, move |n| uploaded.inc(n));
    let response = http
        .post(upload_url)
        .bearer_auth(&target.token)
        .header("content-type", content_type)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .with_context(|| format!("uploading to {base}"))?;
    bar.finish_and_clear();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(
        status.as_u16() == 202,
        "the upload was refused ({status}): {}",
        body["detail"].as_str().unwrap_or("no detail")
    );
    let id = body["id"]
        .as_str()
        .context("the answer names no import")?
        .to_owned();
    let job_url = url_parse(&format!("{base}/v1/imports/{id}"))?;
    let bar = if progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "importing {bar:40} {human_pos}/{human_len} rows  {msg}  eta {eta}",
    )?);
    loop {
        let job: Value = http
            .get(job_url.clone())
            .bearer_auth(&target.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if let Some(total) = job["total"].as_u64() {
            bar.set_length(total);
        }
        let processed = job["processed"].as_u64().unwrap_or(0);
        bar.set_position(processed);
        let seconds = bar.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{:.0} rows/s, {} failed",
            processed as f64 / seconds,
            job["failed"].as_u64().unwrap_or(0)
        ));
        if matches!(job["state"].as_str(), Some("completed" | "failed")) {
            bar.finish_and_clear();
            return Ok(job);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn url_parse(text: &str) -> anyhow::Result<url::Url> {
    url::Url::parse(text).with_context(|| format!("{text} is not a URL"))
}

/// The file as a stream of chunks, counting what was read.
fn futures_stream(
    file: tokio::fs::File,
    mut read: impl FnMut(u64) + Send + 'static,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    use futures::StreamExt;
    tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
        if let Ok(bytes) = &chunk {
            read(bytes.len() as u64);
        }
        chunk
    })
}

/// The summary lines of an ended import, and whether it went wholly well.
pub fn summary(job: &Value) -> (String, bool) {
    let count = |key: &str| job[key].as_u64().unwrap_or(0);
    let mut text = format!(
        "import {} {}: {} rows, {} created, {} updated, {} unchanged, {} failed",
        job["id"].as_str().unwrap_or("?"),
        job["state"].as_str().unwrap_or("?"),
        count("processed"),
        count("created"),
        count("updated"),
        count("unchanged"),
        count("failed"),
    );
    if let Some(failure) = job["failure"].as_str() {
        text.push_str(&format!("\n  the import failed: {failure}"));
    }
    let errors = job["errors"].as_array().cloned().unwrap_or_default();
    for error in errors.iter().take(ERRORS_SHOWN) {
        text.push_str(&format!(
            "\n  line {}: {} {}",
            error["line"],
            error["field"].as_str().unwrap_or(""),
            error["reason"].as_str().unwrap_or("")
        ));
    }
    if count("failed") > ERRORS_SHOWN as u64 {
        text.push_str(&format!(
            "\n  ... and {} more (GET /v1/imports/{} lists the first 1,000)",
            count("failed") - ERRORS_SHOWN as u64,
            job["id"].as_str().unwrap_or("?")
        ));
    }
    let clean = job["state"] == "completed" && count("failed") == 0;
    (text, clean)
}
