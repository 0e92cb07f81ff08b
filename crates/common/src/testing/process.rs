//! Tool processes a test starts and that must end with the test process, however it ends:
//! each runs under a shell wrapper that stops it when a pipe from this process closes.

use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A running tool; dropping it (or the test process ending) stops it.
pub struct Lifeline {
    // Holding the pipe holds the tool. (A background job's own standard input is /dev/null,
    // hence the pipe kept as descriptor 3.)
    stdin: Mutex<Option<ChildStdin>>,
    process: Mutex<Child>,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        if let Ok(mut stdin) = self.stdin.lock() {
            stdin.take();
        }
        if let Ok(mut process) = self.process.lock() {
            let _ = process.wait();
        }
    }
}

/// Runs `command` (a shell command line) until the returned lifeline is dropped, and waits
/// until something listens on `port` (60 s at most). The tool's standard input is closed
/// when it should stop (`pass_stdin`: the tool reads it itself, to stop cleanly).
pub fn spawn_listening(
    name: &str,
    command: &str,
    port: u16,
    pass_stdin: bool,
    dir: &Path,
) -> Result<Lifeline, String> {
    let wrapped = if pass_stdin {
        format!("exec {command}")
    } else {
        format!(
            "exec 3<&0; {command} < /dev/null & child=$!; \
             (cat <&3 > /dev/null; kill $child 2> /dev/null) & wait $child"
        )
    };
    let mut process = Command::new("sh")
        .args(["-c", &wrapped])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("sh could not be run: {e}"))?;
    let stdin = process.stdin.take().ok_or(format!("no pipe to {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Lifeline {
                stdin: Mutex::new(Some(stdin)),
                process: Mutex::new(process),
            });
        }
        if let Ok(Some(status)) = process.try_wait() {
            return Err(format!("{name} exited at start ({status})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let _ = process.kill();
    Err(format!("{name} did not listen on port {port} within 60 s"))
}
