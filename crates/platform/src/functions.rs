//! `platform functions --out DIR`: one Azure Functions app folder per service, with the
//! `host.json` of a custom handler and a `function.json` per function: the HTTP API's paths
//! (forwarded as they are) and every trigger the service answers in custom-handler mode.
//! The triggers are those the service itself declares when started that way, so the
//! folders cannot drift from the code.

use std::path::{Path, PathBuf};

use anyhow::Context;
use common::config::{HostingMode, Sources};
use common::runtime::Launch;
use common::runtime::functions::{TriggerBinding, TriggerSpec};
use serde_json::{Value, json};

/// The app setting prefixes the bindings name (`<name>__fullyQualifiedNamespace` and so on,
/// for managed identities).
pub const SERVICE_BUS_CONNECTION: &str = "ServiceBus";
pub const COSMOS_CONNECTION: &str = "CosmosDB";
pub const FEEDS_CONNECTION: &str = "FeedStorage";
/// The Cosmos DB container the Functions host keeps change-feed leases in (partition key
/// `/id`, as the trigger requires).
pub const FUNCTION_LEASES: &str = "function-leases";

/// The API's paths, each an HTTP function whose requests reach the service as they came.
const HTTP_ROUTES: &[(&str, &str)] = &[
    ("http-v1", "v1/{*path}"),
    ("http-v2", "v2/{*path}"),
    ("http-health", "health/{*path}"),
    ("http-openapi", "openapi.json"),
    ("http-asyncapi", "asyncapi.json"),
];

fn host_json(service: &str) -> Value {
    json!({
        "version": "2.0",
        "customHandler": {
            "description": {
                "defaultExecutablePath": service,
                "workingDirectory": "",
                "arguments": []
            },
            "enableForwardingHttpRequest": true
        },
        "extensions": {
            "http": {"routePrefix": ""},
            "serviceBus": {"maxConcurrentCalls": 16, "autoCompleteMessages": true}
        },
        "extensionBundle": {
            "id": "Microsoft.Azure.Functions.ExtensionBundle",
            "version": "[4.*, 5.0.0)"
        },
        "logging": {"logLevel": {"default": "Information"}}
    })
}

fn http_function(route: &str) -> Value {
    json!({"bindings": [
        {"type": "httpTrigger", "authLevel": "anonymous", "direction": "in", "name": "req",
         "methods": ["get", "post", "put", "delete", "patch", "head", "options"], "route": route},
        {"type": "http", "direction": "out", "name": "res"}
    ]})
}

fn trigger_function(service: &str, spec: &TriggerSpec) -> Value {
    match &spec.binding {
        TriggerBinding::ServiceBus {
            topic,
            subscription,
        } => json!({"bindings": [{
            "type": "serviceBusTrigger", "direction": "in", "name": "message",
            "topicName": topic, "subscriptionName": subscription,
            "connection": SERVICE_BUS_CONNECTION, "isSessionsEnabled": false
        }]}),
        TriggerBinding::ChangeFeed { container, reader } => json!({
            "bindings": [{
                "type": "cosmosDBTrigger", "direction": "in", "name": "documents",
                "connection": COSMOS_CONNECTION, "databaseName": "%COSMOS_DATABASE%",
                "containerName": container, "leaseContainerName": FUNCTION_LEASES,
                "leaseContainerPrefix": format!("{service}.{container}.{reader}."),
                "createLeaseContainerIfNotExists": false, "startFromBeginning": true,
                "maxItemsPerInvocation": 100
            }],
            // A failed batch is handed again, never skipped.
            "retry": {"strategy": "exponentialBackoff", "maxRetryCount": -1,
                "minimumInterval": "00:00:01", "maximumInterval": "00:05:00"}
        }),
        TriggerBinding::Timer { schedule } => json!({"bindings": [{
            "type": "timerTrigger", "direction": "in", "name": "timer",
            "schedule": schedule, "runOnStartup": false, "useMonitor": true
        }]}),
        TriggerBinding::Blob { path } => json!({"bindings": [{
            "type": "blobTrigger", "direction": "in", "name": "feed", "path": path,
            "connection": FEEDS_CONNECTION, "source": "EventGrid", "dataType": "binary"
        }]}),
    }
}

fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| path.display().to_string())
}

/// Each selected service's triggers, from the service started as a custom handler on a
/// scratch data folder.
pub async fn triggers(only: &[String]) -> anyhow::Result<Vec<(&'static str, Vec<TriggerSpec>)>> {
    let scratch = tempfile::tempdir()?;
    let sources = Sources::defaults_only()
        .with_override("data_dir", scratch.path().display().to_string())
        .with_override("http.port", "0")
        .with_override("http.host", "127.0.0.1");
    let mut found = Vec::new();
    for hosted in crate::registry::select(only)? {
        let mut loaded = hosted.load(&sources)?;
        loaded.settings().hosting.mode = HostingMode::Functions;
        let listener = common::http::bind(loaded.settings())?;
        let handle = loaded.start(Launch::on(listener)).await?;
        found.push((hosted.descriptor().name, handle.triggers.clone()));
        handle.stop(true).await?;
    }
    Ok(found)
}

/// Writes `<out>/<service>/` for each selected service; returns the folders.
pub async fn write_apps(out: &Path, only: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut folders = Vec::new();
    for (service, specs) in triggers(only).await? {
        let folder = out.join(service);
        if folder.exists() {
            std::fs::remove_dir_all(&folder)?;
        }
        write_json(&folder.join("host.json"), &host_json(service))?;
        for (name, route) in HTTP_ROUTES {
            write_json(
                &folder.join(name).join("function.json"),
                &http_function(route),
            )?;
        }
        for spec in &specs {
            write_json(
                &folder.join(&spec.function).join("function.json"),
                &trigger_function(service, spec),
            )?;
        }
        folders.push(folder);
    }
    Ok(folders)
}
