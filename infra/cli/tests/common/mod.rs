//! The real `tidemark serve` binary on a data directory, for the tests that stop, kill and
//! restart it.

// Each test uses some of these; a panic is a failed assertion.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Serve {
    child: Child,
    pub base: String,
    /// What it printed before it listened.
    pub started: Vec<String>,
}

impl Serve {
    /// Starts `serve --data-dir dir` with `args` on a free port and waits until it listens.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_command(Command::new(env!("CARGO_BIN_EXE_tidemark")), dir, args)
    }

    /// As [`Self::start`], with no file of it allowed past `bytes` (`RLIMIT_FSIZE`): a write past
    /// it fails as on a full disk (`EFBIG` instead of `ENOSPC`; `SIGXFSZ`, which would kill it,
    /// is ignored, and an ignored signal stays ignored across `exec`).
    pub fn start_with_file_limit(dir: &Path, args: &[&str], bytes: u64) -> Self {
        let mut command = Command::new("bash");
        command.args([
            "-c",
            r#"trap "" XFSZ; exec prlimit --fsize="$0" "$@""#,
            &bytes.to_string(),
            env!("CARGO_BIN_EXE_tidemark"),
        ]);
        Self::start_command(command, dir, args)
    }

    fn start_command(mut command: Command, dir: &Path, args: &[&str]) -> Self {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env_remove("AWS_ENDPOINT_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tidemark binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut started = Vec::new();
        let base = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| {
                    panic!("serve --data-dir {} exited before listening", dir.display())
                })
                .unwrap();
            if let Some(word) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                break word.to_owned();
            }
            started.push(line);
        };
        // Keep reading what it prints, so a full pipe never stalls it.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            base,
            started,
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and its exit within 30 s (it consumes what it accepted first).
    pub fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..1200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("tidemark serve did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tidemark ARGS` to its end: whether it succeeded, and its stdout and stderr.
pub fn tidemark(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("the tidemark binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The JSON answer to a GET of `url`, whatever its status.
pub async fn get_json(http: &reqwest::Client, url: String) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}
