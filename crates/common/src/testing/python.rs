//! Python test tools from PyPI (pinned in `tools/python/requirements.txt`), installed on
//! first use into a virtual environment at `target/tools/python`: a real SMTP server
//! (aiosmtpd) and the Standard Webhooks reference verifier.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::process::{Lifeline, spawn_listening};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The environment's interpreter, installed on first use. Panics with the reason when it
/// cannot be: the tests that ask for it need it.
pub fn python() -> &'static Path {
    match PYTHON.get_or_init(install) {
        Ok(python) => python,
        Err(why) => panic!("the Python test tools are not available: {why}"),
    }
}

/// Made beside and renamed into place, so that test processes installing at once never
/// see half an environment.
fn install() -> Result<PathBuf, String> {
    let root = workspace_root();
    let requirements = root.join("tools/python/requirements.txt");
    let target = root.join("target/tools/python");
    let stamp = target.join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("{}: {e}", requirements.display()))?;
    let interpreter = |dir: &Path| dir.join("bin/python");
    if std::fs::read_to_string(&stamp).is_ok_and(|had| had == wanted) {
        return Ok(interpreter(&target));
    }
    let staging = root.join(format!("target/tools/python.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let run = |command: &mut Command, what: &str| -> Result<(), String> {
        let output = command
            .output()
            .map_err(|e| format!("{what} could not be run (Python 3 is needed): {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    };
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&staging),
        "python3 -m venv",
    )?;
    run(
        Command::new(interpreter(&staging))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
        "pip install",
    )?;
    std::fs::write(staging.join("requirements.txt"), &wanted).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&target);
    if std::fs::rename(&staging, &target).is_err() {
        // Another test process got there first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    // A virtual environment's scripts name its folder: it was made at `staging`, so the
    // interpreter is called by path and the packages are found relative to it.
    Ok(interpreter(&target))
}

/// An SMTP server on loopback that writes each message it takes to a folder.
pub struct SmtpSink {
    pub port: u16,
    folder: tempfile::TempDir,
    _lifeline: Lifeline,
}

impl SmtpSink {
    /// Started on a free port; stops when dropped.
    pub fn start() -> Self {
        let python = python();
        let folder = tempfile::tempdir().expect("a folder for the received mail");
        let script = workspace_root().join("tools/python/smtp_sink.py");
        let mut last = String::new();
        for _ in 0..3 {
            let port = super::free_port().expect("a free port");
            let command = format!(
                "'{}' '{}' {port} '{}'",
                python.display(),
                script.display(),
                folder.path().display()
            );
            match spawn_listening("the SMTP server", &command, port, true, &workspace_root()) {
                Ok(lifeline) => {
                    return Self {
                        port,
                        folder,
                        _lifeline: lifeline,
                    };
                }
                Err(why) => last = why,
            }
        }
        panic!("the SMTP server did not start: {last}");
    }

    /// Every message received so far, as sent (headers and body), in arrival order.
    pub fn messages(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.folder.path())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }
}

/// Checks one delivery with the Standard Webhooks reference library: `Ok` when it accepts
/// the signature, else its reason.
pub fn verify_standard_webhook(
    secret: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(), String> {
    let given = serde_json::json!({
        "secret": secret,
        "headers": headers.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned()))).collect::<serde_json::Map<_, _>>(),
        "body": body,
    });
    let mut child = Command::new(python())
        .arg(workspace_root().join("tools/python/verify_webhook.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(given.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}
