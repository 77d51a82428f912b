//! Application instances as child processes (the `weir-e2e-instance`
//! binary, or any application's), so that a test can stop one with SIGTERM
//! or kill it with SIGKILL mid-stream, as an operator or a crash would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running instance; killed if still running when dropped.
pub struct Instance {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Instance {
    /// Starts `binary` (the test's `CARGO_BIN_EXE_weir-e2e-instance`) with
    /// the workload's arguments (see the binary) and `key=value`
    /// configuration entries; its logs go to `<log_dir>/<name>.log`.
    pub fn spawn(binary: &Path, name: &str, workload: &[&str], config: &[(String, String)], log_dir: &Path) -> Self {
        let mut command = Command::new(binary);
        command
            .args(workload)
            .args(config.iter().map(|(k, v)| format!("{k}={v}")));
        Self::start(name, command, log_dir)
    }

    /// Starts `command`, with its standard error (the logs) going to
    /// `<log_dir>/<name>.log` at the level `WEIR_E2E_LOG` gives.
    pub fn start(name: &str, mut command: Command, log_dir: &Path) -> Self {
        // The harness's own `WEIR_*` variables (`WEIR_CHAOS_ROUNDS`, …) are
        // not the instance's configuration, which an application reads
        // from every `WEIR_*` variable; only those the test set go through.
        let set: Vec<std::ffi::OsString> = command.get_envs().map(|(k, _)| k.to_os_string()).collect();
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WEIR_") && !set.contains(&key) {
                command.env_remove(&key);
            }
        }
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("an instance log file");
        let child = command
            .env(
                "RUST_LOG",
                std::env::var("WEIR_E2E_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Instance {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no commit, no checkpoint, no leaving the group.
    pub fn kill(&mut self) {
        self.child.kill().expect("the instance can be killed");
        self.child.wait().expect("the killed instance is reaped");
    }

    /// SIGSTOP: the whole process stands still, heartbeats included, until
    /// [`Instance::wake`].
    pub fn stall(&self) {
        self.signal("STOP");
    }

    /// SIGCONT.
    pub fn wake(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "cannot send SIG{signal} to {}", self.name);
    }

    /// SIGTERM, then waits for a graceful exit. The signal is sent once the
    /// process catches it: a process that has not yet reached its handler
    /// (just spawned) would die of it, as any process does, which says
    /// nothing of how it stops.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while !self.catches_sigterm() {
            if let Some(status) = self.child.try_wait().expect("the instance can be waited on") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} never began to handle SIGTERM:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal("TERM");
        self.wait(deadline.saturating_duration_since(Instant::now()))
    }

    /// Whether the process has a handler for SIGTERM: bit 14 (signal 15) of
    /// the caught-signals mask in `/proc/<pid>/status`.
    fn catches_sigterm(&self) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << 14) != 0)
    }

    /// Waits for the process to exit on its own.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("the instance can be waited on") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not stop within {timeout:?}:\n{}", self.name, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("the instance can be waited on").is_some()
    }

    /// The instance's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the instance's log contains `text`.
    pub fn await_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address of the instance's operations endpoint, as its log
    /// names it (`operations endpoint ... address=<host:port>`).
    pub fn ops_address(&self) -> String {
        let log = strip_ansi(&self.log());
        log.lines()
            .find(|l| l.contains("operations endpoint"))
            .and_then(|l| l.split("address=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no operations endpoint in the log:\n{}", self.log_tail()))
            .to_string()
    }

    /// The last lines of the instance's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} ---\n{}",
            self.name,
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }
}

/// Log text without its terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// weir configuration entries as the `WEIR_*` environment variables an
/// application reads with `StreamsConfig::from_env`.
pub fn as_environment(settings: Vec<(String, String)>) -> Vec<(String, String)> {
    settings
        .into_iter()
        .map(|(key, value)| (format!("WEIR_{}", key.to_ascii_uppercase().replace('.', "_")), value))
        .collect()
}

/// How long after an instance dies its group session has surely expired:
/// the instances' session timeout (6 s, see
/// [`crate::cluster::Cluster::instance_settings`]) and a margin. A broker
/// that does not reassign a dead member's partitions (Tansu 0.6.0) keeps
/// the member in the generation a newcomer's join makes before then, with
/// partitions nobody reads; a newcomer that joins after it makes one
/// without it.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(8);

/// Waits until every instance holds its assignment (its last rebalance
/// event is an assignment) for a second. A test kills an instance only
/// then: Tansu 0.6.0 keeps a member that dies in the middle of a rebalance
/// in the group, with partitions nobody then reads.
pub fn await_stable_group(instances: &[&Instance], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let assigned = |instance: &&Instance| {
        let log = instance.log();
        log.rfind("partitions assigned") > log.rfind("partitions revoked")
    };
    let mut stable_since: Option<Instant> = None;
    loop {
        if instances.iter().all(assigned) {
            let since = *stable_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                return;
            }
        } else {
            stable_since = None;
        }
        assert!(Instant::now() < deadline, "the group did not settle");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
