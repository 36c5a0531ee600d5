//! Asynchronous saving: one writer thread performs file operations (checkpoint writes, the `last` link,
//! top-k deletions) in the order they were submitted, while training goes on.
//!
//! The training thread submits a save as a snapshot (see [`TensorData`](super::TensorData)): taking it
//! copies nothing, and the writer encodes it tensor by tensor through one reused buffer. Operations are
//! submitted in *groups* (the actions of one checkpoint trigger): when one fails, the later operations of
//! its group are skipped, so a deletion that a failed write would have justified never happens; the
//! failure waits, with the position of the operation that failed, until the group's owner takes it.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

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
                for (group, job) in receiver {
                    perform(&worker, group, job);
                }
            })
            .ok();
        Self {
            sender: thread.as_ref().map(|_| sender),
            shared,
            thread,
        }
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
}
