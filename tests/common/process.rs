//! The `connres` binary as a child process: spawned with a clean environment, its
//! stderr followed line by line, signalled, stopped and resumed, killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;

use super::WAIT;

pub const BIN: &str = env!("CARGO_BIN_EXE_connres");

/// A file of the project, such as the shipped `resources.yaml`.
pub fn project_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// The binary with a clean environment for its own variables and for logging.
pub fn connres() -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("NATS_") || name.starts_with("CONNRES_") {
            cmd.env_remove(name);
        }
    }
    cmd
        // The shipped default filter, whatever the developer's environment says.
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What a finished process printed.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A child process killed on drop unless it was waited for.
pub struct Proc {
    child: Option<Child>,
    /// Stderr lines as they are written.
    lines: mpsc::Receiver<String>,
    /// Every stderr line received so far.
    seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd.spawn().expect("connres starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = child.stdout.take().expect("stdout piped");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Proc {
            child: Some(child),
            lines,
            seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Stops the process (SIGSTOP) and returns once it is stopped.
    pub fn stop(&self) {
        self.signal("STOP");
        let pid = self.pid() as libc::pid_t;
        let mut status = 0;
        // SAFETY: waitpid on our own child; WUNTRACED returns once it has stopped and
        // does not reap it.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
        assert!(r == pid && libc::WIFSTOPPED(status), "connres stopped");
    }

    /// Resumes a stopped process (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Waits for a stderr line containing `needle` (bounded by WAIT as a failure guard)
    /// and returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "connres logged no line with {needle:?}; it logged:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the exit (bounded by WAIT as a failure guard) and collects the output.
    pub async fn output(mut self) -> Output {
        let mut child = self.child.take().expect("running");
        let pid = child.id();
        let waiting = tokio::task::spawn_blocking(move || child.wait());
        let status = match tokio::time::timeout(WAIT, waiting).await {
            Ok(status) => status.expect("joins").expect("waits"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!(
                    "connres (pid {pid}) did not exit; it logged:\n{}",
                    self.seen.join("\n")
                );
            }
        };
        let stdout = self.stdout.take().map(|h| h.join().unwrap_or_default());
        let mut stderr = std::mem::take(&mut self.seen);
        stderr.extend(self.lines.iter());
        Output {
            status,
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.join("\n"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `connres serve` on `yaml`, written to a private directory (so that the reload
/// watcher watches only it), against `server`.
pub fn serve(server_url: &str, yaml: &str) -> (tempfile::TempDir, Proc) {
    serve_with(server_url, yaml, &[])
}

/// Like [`serve`], with more options for `serve`. The config is `resources.yaml` in the
/// returned directory.
pub fn serve_with(server_url: &str, yaml: &str, options: &[&str]) -> (tempfile::TempDir, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resources.yaml");
    std::fs::write(&path, yaml).unwrap();
    let proc = Proc::spawn(
        connres()
            .arg("serve")
            .args(options)
            .arg("--config")
            .arg(&path)
            .arg("--nats")
            .arg(server_url),
    );
    (dir, proc)
}
