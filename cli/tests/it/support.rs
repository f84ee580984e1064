//! Starting `quiver` child processes and talking to them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `quiver` node process, killed on drop.
pub struct QuiverProcess {
    pub child: Child,
    pub endpoint: String,
    /// Log lines (stderr) after the start-up line; kept so the reader thread keeps draining.
    logs: mpsc::Receiver<String>,
}

pub fn quiver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quiver"))
}

/// Starts `quiver <args>` and waits until it logs the address it serves on.
pub fn must_spawn(args: &[&str], envs: &[(&str, &str)]) -> QuiverProcess {
    let mut cmd = quiver();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "0");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn quiver");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Owned from here on, so a failed start still kills the child.
    let mut process = QuiverProcess {
        child,
        endpoint: String::new(),
        logs: rx,
    };
    loop {
        let line = process
            .logs
            .recv_timeout(Duration::from_secs(60))
            .expect("quiver did not report its address in time");
        // `quiver dev --nodes` relays its children's logs as "[node I] ..."
        if line.starts_with("[node") {
            continue;
        }
        if !line.contains("serving gRPC") {
            continue;
        }
        if let Some(rest) = line.split("listen=").nth(1) {
            let addr = rest.split_whitespace().next().expect("address");
            process.endpoint = format!("http://{addr}");
            return process;
        }
    }
}

/// Polls `attempt` every 100 ms until it succeeds, and returns its value; after `within`,
/// panics with `what` and the last failure. For state that converges: elections, replicas
/// catching up, views that trail the leader.
pub async fn eventually<T, E, F, Fut>(within: Duration, what: &str, mut attempt: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if std::time::Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The nodes holding a replica of `shard` (an entry of `collection info`'s `shards`), first
/// replica first.
pub fn replica_nodes(shard: &serde_json::Value) -> Vec<u64> {
    shard["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_u64().unwrap())
        .collect()
}

/// `quiver dev` on an ephemeral loopback port with data in `dir`.
pub fn must_spawn_dev(dir: &Path) -> QuiverProcess {
    let dir = dir.to_str().expect("utf-8 path");
    must_spawn(
        &[
            "dev",
            "--data-dir",
            dir,
            "--listen",
            "127.0.0.1:0",
            "--rest-listen",
            "127.0.0.1:0",
        ],
        &[],
    )
}

impl QuiverProcess {
    /// Waits until the process logs a line containing `needle`.
    pub fn must_log(&self, needle: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?} within {within:?}"),
            }
        }
    }

    /// SIGKILL: no chance to flush or dump anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn must_terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("quiver did not stop within 30 s of SIGTERM");
    }

    /// Runs a CLI command against this process; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = quiver()
            .args(args)
            .args(["--endpoint", &self.endpoint])
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run quiver");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn must_cli(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.cli(args);
        assert!(ok, "quiver {args:?} failed: {stderr}");
        stdout
    }
}

impl Drop for QuiverProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
