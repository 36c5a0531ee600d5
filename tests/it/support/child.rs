//! This test binary run again as a child process that executes one ignored test alone: for a kill at a
//! random moment, a limit set by a shell, or standard error read whole.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The name by which the test harness knows the test function `$test` of the calling module: its path
/// below the crate root (`crash::child_trains_forever`), which `--exact` matches. Naming the function
/// makes a renamed or moved child test a compile error rather than a child that runs no test.
macro_rules! test_name {
    ($test:ident) => {{
        let _: fn() = $test;
        $crate::support::child::below_crate_root(module_path!(), stringify!($test))
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

/// This test binary, run again as a child process that executes only the ignored test `name` (as
/// [`test_name!`] gives it).
pub struct Child {
    pub process: std::process::Child,
    lines: Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

/// The arguments that make a test binary run the ignored test `name` alone.
fn harness_args(name: &str) -> [&str; 5] {
    [
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

impl Child {
    /// Starts the child with `envs`; with `shell_prelude`, through `sh -c "<prelude>; exec ..."`, so the
    /// prelude can set limits and signal dispositions that the test binary inherits.
    pub fn spawn(name: &str, envs: &[(&str, OsString)], shell_prelude: Option<&str>) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = match shell_prelude {
            None => Command::new(&exe),
            Some(prelude) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("{prelude}; exec \"$0\" \"$@\""))
                    .arg(&exe);
                c
            }
        };
        cmd.args(harness_args(name))
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = process.stdout.take().unwrap();
        let mut err = process.stderr.take().unwrap();
        let out_text = stdout.clone();
        let err_text = stderr.clone();
        let readers = vec![
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    out_text.lock().unwrap().push_str(&line);
                    out_text.lock().unwrap().push('\n');
                    let _ = tx.send(line);
                }
            }),
            thread::spawn(move || {
                let mut buf = [0; 4096];
                while let Ok(n @ 1..) = err.read(&mut buf) {
                    err_text
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }),
        ];
        Self {
            process,
            lines,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// What the child printed so far (both streams), for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- child stdout ---\n{}--- child stderr ---\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// The child's standard error once it has exited and the readers are done.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// The first stdout line starting with `prefix`. `Err` with the transcript when the child exits
    /// first or `timeout` passes.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait();
                    return Err(format!(
                        "the child exited ({status}) before printing `{prefix}`\n{}",
                        self.transcript()
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(status) = self.process.try_wait().unwrap() {
                // Let the reader deliver what was printed before the exit.
                if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    if line.starts_with(prefix) {
                        return Ok(line);
                    }
                }
                self.join_readers();
                return Err(format!(
                    "the child exited ({status}) before printing `{prefix}`\n{}",
                    self.transcript()
                ));
            }
            if Instant::now() > deadline {
                let _ = self.process.kill();
                self.wait();
                return Err(format!(
                    "the child printed no `{prefix}` line within {timeout:?}\n{}",
                    self.transcript()
                ));
            }
        }
    }

    /// Sleeps `duration`, failing with the transcript if the child exits by itself meanwhile.
    pub fn stays_alive_for(&mut self, duration: Duration) -> Result<(), String> {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_wait().unwrap() {
                self.join_readers();
                return Err(format!(
                    "the child exited by itself ({status}) while it should have been training\n{}",
                    self.transcript()
                ));
            }
            thread::sleep((deadline - Instant::now()).min(Duration::from_millis(5)));
        }
        Ok(())
    }

    /// Sends SIGKILL (on unix) and reaps the child; `Err` with the transcript if it had already exited
    /// by itself.
    pub fn kill(&mut self) -> Result<(), String> {
        if let Some(status) = self.process.try_wait().unwrap() {
            self.join_readers();
            return Err(format!(
                "the child exited by itself ({status}) before it was killed\n{}",
                self.transcript()
            ));
        }
        self.process.kill().unwrap();
        let status = self.wait();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if status.signal() != Some(9) {
                return Err(format!(
                    "the child was not killed by SIGKILL but ended with {status}\n{}",
                    self.transcript()
                ));
            }
        }
        Ok(())
    }

    /// Waits for the child to exit (at most `timeout`, then kills it) and for its output.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.process.try_wait().unwrap().is_some() {
                return Ok(self.wait());
            }
            if Instant::now() > deadline {
                let _ = self.process.kill();
                self.wait();
                return Err(format!(
                    "the child did not finish within {timeout:?}\n{}",
                    self.transcript()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait(&mut self) -> ExitStatus {
        let status = self.process.wait().unwrap();
        self.join_readers();
        status
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}
