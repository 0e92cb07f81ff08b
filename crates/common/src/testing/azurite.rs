//! Azurite, Microsoft's storage emulator, for the blob adapter's tests: installed from the
//! npm registry on first use (the versions pinned in `tools/azurite/`) into
//! `target/tools/azurite`, started once per test process on a free port, and stopped when
//! the process ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Azurite's one account and its published key (the same on every machine).
pub const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    /// The blob endpoint, `http://127.0.0.1:<port>/devstoreaccount1`.
    pub endpoint: String,
    // Held for the test process's life: the emulator stops when it ends.
    _lifeline: super::process::Lifeline,
}

static AZURITE: OnceLock<Result<Azurite, String>> = OnceLock::new();

/// The process's Azurite, started on first use. Panics with the reason when it cannot be
/// installed or started: the blob contract needs it.
pub fn azurite() -> &'static Azurite {
    match AZURITE.get_or_init(start) {
        Ok(azurite) => azurite,
        Err(why) => panic!("Azurite is not available: {why}"),
    }
}

/// An account SAS for every blob operation, valid for a day: what an operator would put in
/// `<SERVICE>__FILES__BLOB__SAS`.
pub fn account_sas() -> String {
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let expiry = expiry
        .replace_nanosecond(0)
        .unwrap_or(expiry)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (version, services, types, permissions, protocols) =
        ("2021-08-06", "b", "sco", "rwdlacup", "https,http");
    let to_sign = format!(
        "{ACCOUNT}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n{protocols}\n{version}\n\n"
    );
    let key = STANDARD.decode(ACCOUNT_KEY).unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(to_sign.as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", version)
        .append_pair("ss", services)
        .append_pair("srt", types)
        .append_pair("sp", permissions)
        .append_pair("se", &expiry)
        .append_pair("spr", protocols)
        .append_pair("sig", &signature)
        .finish()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn start() -> Result<Azurite, String> {
    let installed = install()?;
    let mut last_error = String::new();
    // A port found free may be taken before Azurite binds it: try another.
    for _ in 0..3 {
        match launch(&installed) {
            Ok(azurite) => return Ok(azurite),
            Err(why) => last_error = why,
        }
    }
    Err(last_error)
}

/// `target/tools/azurite` with its packages, installed with `npm ci` from the pinned lock
/// file when missing. Written beside and renamed into place, so that test processes
/// installing at once never see half an install.
fn install() -> Result<PathBuf, String> {
    let root = workspace_root();
    let target = root.join("target/tools/azurite");
    let entry = target.join("node_modules/azurite/dist/src/blob/main.js");
    if entry.exists() {
        return Ok(entry);
    }
    let staging = root.join(format!("target/tools/azurite.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(root.join("tools/azurite").join(file), staging.join(file))
            .map_err(|e| format!("tools/azurite/{file}: {e}"))?;
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&staging)
        .output()
        .map_err(|e| format!("npm could not be run (Node.js and npm are needed): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "npm ci failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if std::fs::rename(&staging, &target).is_err() {
        // Another test process got there first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    if entry.exists() {
        Ok(entry)
    } else {
        Err(format!("{} is missing after the install", entry.display()))
    }
}

fn launch(entry: &Path) -> Result<Azurite, String> {
    let port = super::free_port().map_err(|e| e.to_string())?;
    let command = format!(
        "node '{}' --blobHost 127.0.0.1 --blobPort {port} --inMemoryPersistence \
         --skipApiVersionCheck --loose --silent --disableTelemetry",
        entry.display()
    );
    let lifeline =
        super::process::spawn_listening("Azurite", &command, port, false, &workspace_root())?;
    Ok(Azurite {
        endpoint: format!("http://127.0.0.1:{port}/{ACCOUNT}"),
        _lifeline: lifeline,
    })
}
