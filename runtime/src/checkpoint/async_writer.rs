//! Asynchronous saving: one writer thread performs file operations (checkpoint writes, the `last` link,
//! top-k deletions) in the order they were submitted, while training goes on.
//!
//! The training thread submits a save as a snapshot (see [`TensorData`](super::TensorData)): taking it
//! copies nothing. The writer first copies it into its staging buffers ([`Staging`], at once, so that
//! the next optimizer step finds the live buffers free), then encodes and writes the copy on a thread of
//! the idle scheduling policy ([`when_idle`]), with direct I/O where the file system allows it.
//! Operations are submitted in *groups* (the actions of one checkpoint trigger): when one fails, the
//! later operations of its group are skipped, so a deletion that a failed write would have justified
//! never happens; the failure waits, with the position of the operation that failed, until the group's
//! owner takes it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::Staging;
use crate::{Error, Result};

/// A file operation performed on the writer thread.
pub(crate) type FileJob = Box<dyn FnOnce() -> Result<()> + Send>;

/// Why a group's operations stopped: the position (in submission order within the group, from 0) of
/// the operation that failed, and its error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) index: usize,
    pub(crate) error: Error,
}

#[derive(Default)]
struct Progress {
    submitted: u64,
    done: u64,
    /// The groups not finished yet.
    groups: BTreeMap<u64, Group>,
    next_group: u64,
}

#[derive(Default)]
struct Group {
    submitted: usize,
    /// Operations performed or skipped.
    done: usize,
    failure: Option<Failure>,
}

type Shared = Arc<(Mutex<Progress>, Condvar)>;

/// The writer thread and its queue. Dropping it waits for the queue to drain.
pub(crate) struct AsyncWriter {
    sender: Option<Sender<(u64, FileJob)>>,
    shared: Shared,
    thread: Option<JoinHandle<()>>,
    /// The staging buffers of its saves (see [`Staging`]); one save runs at a time.
    staging: Arc<Mutex<Staging>>,
    /// Whether [`warm_staging`](Self::warm_staging) has run.
    warmed: AtomicBool,
}

impl AsyncWriter {
    /// Starts the writer thread. When no thread can be started, operations run on submission, in the
    /// caller's thread, with the same bookkeeping.
    pub(crate) fn new() -> Self {
        let shared: Shared = Arc::default();
        let (sender, receiver) = mpsc::channel::<(u64, FileJob)>();
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fulgur-checkpoint-writer".into())
            .spawn(move || {
                // Should it encode itself (no thread could be started for that), the writer hashes
                // on its own thread: a helper thread would take a core from training.
                super::hash::hash_on_this_thread_only();
                for (group, job) in receiver {
                    perform(&worker, group, job);
                }
            })
            .ok();
        Self {
            sender: thread.as_ref().map(|_| sender),
            shared,
            thread,
            staging: Arc::default(),
            warmed: AtomicBool::new(false),
        }
    }

    /// The staging buffers, for a save job to copy its snapshot into.
    pub(crate) fn staging(&self) -> Arc<Mutex<Staging>> {
        Arc::clone(&self.staging)
    }

    /// Prepares the staging buffers for snapshots of `sizes` (see [`Staging::sizes`]) on the writer
    /// thread, at idle priority, once per writer: the first save then stages into warm memory like
    /// every later one. Queued after the operations submitted before; in no group (nothing to settle).
    pub(crate) fn warm_staging(&self, sizes: Vec<usize>) {
        if self.warmed.swap(true, Ordering::Relaxed) {
            return;
        }
        let staging = self.staging();
        self.submit(
            0,
            Box::new(move || {
                when_idle(|| {
                    staging
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .reserve(&sizes)
                });
                Ok(())
            }),
        );
    }

    /// Whether [`warm_staging`](Self::warm_staging) has run (or been queued).
    pub(crate) fn staging_warmed(&self) -> bool {
        self.warmed.load(Ordering::Relaxed)
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        lock(&self.shared)
    }

    /// A new group of operations.
    pub(crate) fn group(&self) -> u64 {
        let mut p = self.progress();
        p.next_group += 1;
        let group = p.next_group;
        p.groups.insert(group, Group::default());
        group
    }

    /// Queues `job` in `group`, after every operation submitted before.
    pub(crate) fn submit(&self, group: u64, job: FileJob) {
        {
            let mut p = self.progress();
            p.submitted += 1;
            if let Some(g) = p.groups.get_mut(&group) {
                g.submitted += 1;
            }
        }
        let job = match &self.sender {
            Some(sender) => match sender.send((group, job)) {
                Ok(()) => return,
                Err(mpsc::SendError((_, job))) => job,
            },
            None => job,
        };
        perform(&self.shared, group, job);
    }

    /// Waits until every submitted operation is done.
    pub(crate) fn flush(&self) {
        let (lock_, done) = &*self.shared;
        let mut p = lock_.lock().unwrap_or_else(|e| e.into_inner());
        while p.done < p.submitted {
            p = done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether every submitted operation is done.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        let p = self.progress();
        p.done == p.submitted
    }

    /// Whether every operation submitted in `group` is done (also when the group is finished).
    pub(crate) fn is_done(&self, group: u64) -> bool {
        self.progress()
            .groups
            .get(&group)
            .is_none_or(|g| g.done == g.submitted)
    }

    /// Closes `group` (after [`flush`](Self::flush)) and returns its failure, if one of its operations
    /// failed.
    pub(crate) fn finish(&self, group: u64) -> Option<Failure> {
        self.progress()
            .groups
            .remove(&group)
            .and_then(|g| g.failure)
    }
}

/// Runs `f` on a new thread of the idle scheduling policy (see [`lower_priority`]) and returns its
/// result: the writer's work that can wait for a core training leaves idle (encoding and writing a
/// staged checkpoint), while the urgent part (staging, which frees the live buffers before the next
/// optimizer step writes them) keeps the writer thread's normal priority; a thread's policy cannot be
/// raised back without privileges, hence a thread of its own. Runs `f` on this thread when no thread
/// can be started.
pub(crate) fn when_idle<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let mut f = Some(f);
    let spawned = std::thread::scope(|s| {
        let f = &mut f;
        std::thread::Builder::new()
            .name("fulgur-checkpoint-flush".into())
            .spawn_scoped(s, move || {
                lower_priority();
                super::hash::hash_on_this_thread_only();
                f.take().map(|f| f())
            })
            .ok()
            .map(|h| h.join())
    });
    match spawned {
        Some(Ok(Some(out))) => out,
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        _ => match f.take() {
            Some(f) => f(),
            None => unreachable!("the flush thread ran `f` and returned its result"),
        },
    }
}

/// Gives this thread the idle scheduling policy (Linux `SCHED_IDLE`): it runs on a core no other
/// thread wants and yields it at once when one does. Training's threads never wait for it; a parallel
/// kernel (a matrix product split over the cores) would wait for its slowest part, so a writer that
/// kept a core for the rest of a time slice would slow every step it overlaps. Elsewhere, and when
/// the policy cannot be set, the thread keeps the default priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `sched_setscheduler` with pid 0 changes only the calling thread's policy; `param` lives
    // across the call and SCHED_IDLE takes priority 0. A failure leaves the policy unchanged.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Progress> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `job` unless an earlier operation of its group failed, and records the outcome.
fn perform(shared: &Shared, group: u64, job: FileJob) {
    let skip = lock(shared)
        .groups
        .get(&group)
        .is_some_and(|g| g.failure.is_some());
    let outcome = if skip {
        Ok(())
    } else {
        // A panic in an operation is a failure of that operation, not of the writer thread.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or_else(|_| {
            Err(Error::Device(
                "the checkpoint writer panicked while saving".to_string(),
            ))
        })
    };
    let mut p = lock(shared);
    if let Some(g) = p.groups.get_mut(&group) {
        if let Err(error) = outcome {
            g.failure.get_or_insert(Failure {
                index: g.done,
                error,
            });
        }
        g.done += 1;
    }
    p.done += 1;
    drop(p);
    shared.1.notify_all();
}

impl Drop for AsyncWriter {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn io_error(op: &'static str) -> Error {
        Error::Io {
            path: "x.ckpt".into(),
            op,
            source: std::io::Error::other("disk full"),
        }
    }

    #[test]
    fn operations_run_in_order_and_a_failure_skips_the_rest_of_its_group_only() {
        let writer = AsyncWriter::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let push = |s: &'static str, fail: bool| -> FileJob {
            let log = Arc::clone(&log);
            Box::new(move || {
                log.lock().unwrap().push(s);
                if fail {
                    Err(io_error("write"))
                } else {
                    Ok(())
                }
            })
        };
        let (a, b) = (writer.group(), writer.group());
        writer.submit(a, push("a-write", false));
        writer.submit(a, push("a-write-2", true));
        writer.submit(b, push("b-write", false));
        writer.submit(a, push("a-delete", false));
        writer.flush();
        assert!(writer.is_idle() && writer.is_done(a) && writer.is_done(b));
        assert_eq!(*log.lock().unwrap(), ["a-write", "a-write-2", "b-write"]);
        let failure = writer.finish(a).expect("group a failed");
        assert_eq!(failure.index, 1);
        assert!(failure.error.is_io());
        assert!(writer.finish(b).is_none());
        assert!(writer.finish(a).is_none(), "taken once");
    }

    #[test]
    fn a_group_is_done_while_a_later_one_runs() {
        let writer = AsyncWriter::new();
        let (a, b) = (writer.group(), writer.group());
        let (release, wait) = mpsc::channel::<()>();
        writer.submit(a, Box::new(|| Ok(())));
        writer.submit(
            b,
            Box::new(move || {
                let _ = wait.recv();
                Ok(())
            }),
        );
        while !writer.is_done(a) {
            std::thread::yield_now();
        }
        assert!(!writer.is_done(b) && !writer.is_idle());
        release.send(()).unwrap();
        writer.flush();
        assert!(writer.is_done(b));
    }

    #[test]
    fn dropping_the_writer_waits_for_the_queue() {
        let count = Arc::new(AtomicUsize::new(0));
        {
            let writer = AsyncWriter::new();
            let g = writer.group();
            for _ in 0..3 {
                let count = Arc::clone(&count);
                writer.submit(
                    g,
                    Box::new(move || {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        count.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }),
                );
            }
        }
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    /// Work handed to the idle thread runs there, with the idle policy (Linux), and its result or its
    /// panic comes back; the calling thread keeps its own policy.
    #[test]
    fn idle_work_runs_at_the_idle_policy_and_returns_its_result() {
        #[cfg(target_os = "linux")]
        fn policy() -> i32 {
            // SAFETY: `sched_getscheduler(0)` only reads the calling thread's policy.
            unsafe { libc::sched_getscheduler(0) }
        }
        #[cfg(not(target_os = "linux"))]
        fn policy() -> i32 {
            0
        }
        let caller = policy();
        let (name, inside) = when_idle(|| {
            let name = std::thread::current().name().map(str::to_string);
            (name, policy())
        });
        assert_eq!(name.as_deref(), Some("fulgur-checkpoint-flush"));
        #[cfg(target_os = "linux")]
        assert_eq!(inside, libc::SCHED_IDLE);
        let _ = inside;
        assert_eq!(policy(), caller, "the caller's policy is unchanged");
        let panic = std::panic::catch_unwind(|| when_idle(|| panic!("boom"))).unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"boom"));
    }
}
