//! This test binary run again under `mpirun`: each rank executes one ignored test alone (a *child*).
//!
//! A parent test names its child with [`test_name!`] and launches it with [`mpirun`]:
//!
//! ```ignore
//! #[test]
//! fn ranks_agree() {
//!     let run = mpirun(2, test_name!(child_ranks_agree)).env("STEPS", "3").run();
//!     run.assert_passed();
//! }
//!
//! #[test]
//! #[ignore = "a child of `ranks_agree`, run under mpirun"]
//! fn child_ranks_agree() {
//!     let ddp = Ddp::new().unwrap();
//!     // ... assertions on this rank ...
//!     passed(&ddp);
//! }
//! ```
//!
//! A child ends with [`passed`], which prints the line [`Run::assert_passed`] counts, one per rank: a
//! child that ran no test (a filter that matches nothing) cannot pass for one that did.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fulgur::strategy::Strategy;

/// The name by which the test harness knows the test function `$test` of the calling module: its path
/// below the crate root (`strategy::child_broadcast`), which `--exact` matches. Naming the function
/// makes a renamed or moved child a compile error rather than a child that runs no test.
macro_rules! test_name {
    ($test:ident) => {{
        let _: fn() = $test;
        $crate::support::below_crate_root(module_path!(), stringify!($test))
    }};
}
pub(crate) use test_name;

/// `module::test` for a test in the module `crate::module` (`module_path!()` starts with the crate).
pub fn below_crate_root(module_path: &str, test: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, module)) => format!("{module}::{test}"),
        None => test.to_string(),
    }
}

/// The start of the line [`passed`] prints.
const PASSED: &str = "fulgur-ddp-test: passed on rank";

/// Set in every rank's environment by [`Mpirun::run`].
pub const CHILD_ENV: &str = "FULGUR_DDP_CHILD";

/// How long a run may take before it counts as hung: far above a healthy run's few seconds, so only
/// a deadlock reaches it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Ends a child on one rank: prints the line that [`Run::assert_passed`] counts.
pub fn passed(strategy: &dyn Strategy) {
    passed_on(strategy.rank(), strategy.world_size());
}

/// [`passed`] for a child that no longer has its strategy.
pub fn passed_on(rank: usize, world_size: usize) {
    println!("{PASSED} {rank} of {world_size}");
}

/// Whether this process is a rank started by [`Mpirun::run`], for children that must not run alone
/// (`cargo test -- --ignored`).
pub fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// A launch of `ranks` copies of this test binary under `mpirun`, each running only the ignored test
/// `test` (as [`test_name!`] gives it). Build with [`mpirun`], start with [`Mpirun::run`].
#[derive(Debug, Clone)]
pub struct Mpirun {
    ranks: usize,
    test: String,
    envs: Vec<(String, OsString)>,
    timeout: Duration,
}

/// `ranks` processes running the child `test`, with [`DEFAULT_TIMEOUT`].
pub fn mpirun(ranks: usize, test: impl Into<String>) -> Mpirun {
    Mpirun {
        ranks,
        test: test.into(),
        envs: Vec::new(),
        timeout: DEFAULT_TIMEOUT,
    }
}

impl Mpirun {
    /// Sets `key` in every rank's environment.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.envs.push((key.to_string(), value.into()));
        self
    }

    /// Kills the run (the whole process group of `mpirun`) after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line, for messages.
    fn args(&self) -> Vec<OsString> {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut args: Vec<OsString> = ["--allow-run-as-root", "--oversubscribe", "-n"]
            .map(OsString::from)
            .into();
        args.push(self.ranks.to_string().into());
        for (key, _) in &self.envs {
            args.push("-x".into());
            args.push(key.into());
        }
        args.push(exe.into());
        for arg in [
            "--ignored",
            "--exact",
            &self.test,
            "--test-threads=1",
            "--nocapture",
        ] {
            args.push(arg.into());
        }
        args
    }

    /// Runs to the end, or until the timeout, when every process of the run is killed.
    pub fn run(self) -> Run {
        let args = self.args();
        let command = format!(
            "mpirun {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut cmd = Command::new("mpirun");
        cmd.args(&args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env(CHILD_ENV, "1")
            // Containers rarely allow the cross-memory attach Open MPI's shared-memory transport tries
            // first; it then prints a warning per message. Copy through shared memory instead.
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a timeout can kill mpirun and every rank at once.
            .process_group(0);
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e} (is Open MPI installed?)"));
        let stdout = capture(child.stdout.take().expect("piped stdout"));
        let stderr = capture(child.stderr.take().expect("piped stderr"));
        let deadline = start + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for mpirun") {
                break Some(status);
            }
            if Instant::now() > deadline {
                kill_group(child.id());
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let elapsed = start.elapsed();
        // Ranks that outlive mpirun would keep the pipes open: read what is there after a grace time.
        let stdout = stdout.finish(Duration::from_secs(5));
        let stderr = stderr.finish(Duration::from_secs(5));
        if status.is_none() {
            kill_group(child.id());
        }
        Run {
            command,
            ranks: self.ranks,
            status,
            stdout,
            stderr,
            elapsed,
            timeout: self.timeout,
        }
    }
}

/// Sends SIGKILL to the process group `pgid` (mpirun's, which its ranks inherit).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// A stream read to its end by a thread.
struct Capture {
    text: Arc<Mutex<Vec<u8>>>,
    reader: thread::JoinHandle<()>,
}

fn capture(mut stream: impl Read + Send + 'static) -> Capture {
    let text = Arc::new(Mutex::new(Vec::new()));
    let sink = text.clone();
    let reader = thread::spawn(move || {
        let mut buf = [0; 8192];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    Capture { text, reader }
}

impl Capture {
    /// Everything read, once the stream ends or `grace` passes.
    fn finish(self, grace: Duration) -> String {
        let deadline = Instant::now() + grace;
        while !self.reader.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let text = self.text.lock().unwrap();
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// How a run under `mpirun` ended.
#[derive(Debug)]
pub struct Run {
    /// The command line.
    pub command: String,
    /// Number of ranks started.
    pub ranks: usize,
    /// mpirun's exit status; `None` when the run was killed at the timeout.
    pub status: Option<ExitStatus>,
    /// What every rank (and mpirun) printed on standard output.
    pub stdout: String,
    /// What every rank (and mpirun) printed on standard error.
    pub stderr: String,
    /// From the start of mpirun to its end (or the timeout).
    pub elapsed: Duration,
    /// The timeout the run had.
    pub timeout: Duration,
}

impl Run {
    /// Whether mpirun ended by itself (before the timeout).
    pub fn finished(&self) -> bool {
        self.status.is_some()
    }

    /// Whether mpirun ended by itself with exit status 0.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The ranks that reached [`passed`].
    pub fn passed_ranks(&self) -> usize {
        // The harness prints `test <name> ... ` without a newline before the test's own output.
        self.stdout.matches(PASSED).count()
    }

    /// The command, how it ended and everything printed, for failure messages.
    pub fn transcript(&self) -> String {
        let end = match self.status {
            Some(status) => format!("ended with {status} after {:.1?}", self.elapsed),
            None => format!("killed at the timeout of {:?}", self.timeout),
        };
        format!(
            "`{}` {end}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command, self.stdout, self.stderr
        )
    }

    /// Panics with the transcript unless mpirun succeeded and every rank reached [`passed`].
    pub fn assert_passed(&self) {
        assert!(
            self.succeeded() && self.passed_ranks() == self.ranks,
            "expected all {} ranks to pass, {} did\n{}",
            self.ranks,
            self.passed_ranks(),
            self.transcript()
        );
        eprintln!("{} ranks passed in {:.1?}", self.ranks, self.elapsed);
    }

    /// Panics with the transcript unless mpirun ended by itself, non-zero, and no rank reached
    /// [`passed`]: the run was ended, not hung and not finished.
    pub fn assert_ended_every_rank(&self) {
        assert!(
            self.finished() && !self.succeeded() && self.passed_ranks() == 0,
            "expected the job to end non-zero before any rank passed\n{}",
            self.transcript()
        );
        eprintln!("the job ended in {:.1?}", self.elapsed);
    }
}
