//! How processes cooperate: rank, world size, collectives, and the rank-zero gate for files.
//!
//! The trainer talks to processes only through [`Strategy`], and writes and deletes files only through
//! [`RankZeroFs`]. [`SingleProcess`] is the default; with the `mpi` feature, `Ddp` runs data-parallel
//! over Open MPI.

#[cfg(feature = "mpi")]
mod ddp;
mod grads;
#[cfg(all(feature = "cuda", feature = "mpi"))]
mod nccl;
mod outcome;
mod single;

use std::path::{Path, PathBuf};

use crate::checkpoint::{write_checkpoint, Checkpoint};
use crate::{Error, Result};

#[cfg(feature = "mpi")]
pub use ddp::Ddp;
pub use grads::GradBuffer;
/// The `mpi` crate [`Ddp`] runs on, for programs that use MPI themselves: initialise it before the
/// first `Ddp::new()` to own it (`Ddp` then joins it and leaves finalising it to the program).
#[cfg(feature = "mpi")]
pub use mpi;
#[cfg(all(feature = "cuda", feature = "mpi"))]
#[doc(hidden)]
pub use nccl::NcclGrads;
pub use single::SingleProcess;

/// A reduction for [`Strategy::all_reduce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum over ranks.
    Sum,
    /// Mean over ranks.
    Mean,
    /// Maximum over ranks.
    Max,
    /// Minimum over ranks.
    Min,
}

/// The process group a run executes in.
pub trait Strategy: Send {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;

    /// Number of processes.
    fn world_size(&self) -> usize;

    /// `true` on the process that writes files.
    fn is_global_zero(&self) -> bool {
        self.rank() == 0
    }

    /// Waits until every process reaches this point.
    fn barrier(&self) -> Result<()>;

    /// Replaces `data` on every rank with rank `root`'s bytes.
    fn broadcast(&self, data: &mut Vec<u8>, root: usize) -> Result<()>;

    /// Reduces `values` element-wise over all ranks, in place, on every rank.
    fn all_reduce(&self, values: &mut [f64], op: ReduceOp) -> Result<()>;

    /// Reduces `values` element-wise over all ranks, in place, on every rank: the gradient buckets.
    fn all_reduce_f32(&self, values: &mut [f32], op: ReduceOp) -> Result<()>;

    /// Ends every process of the group because `error` ended the run on this one, so that no other
    /// rank waits forever in a collective this one will never join. Returns only where there is
    /// nothing to end (a single process): the caller then returns the error as usual.
    fn fail(&self, error: &Error) {
        let _ = error;
    }

    /// The NCCL communicator that averages gradients on the GPU, when this strategy has one
    /// ([`Ddp::with_nccl`]); the `Cuda` device's [`Backend::average_grads`](crate::Backend::average_grads)
    /// uses it instead of the host path.
    #[cfg(all(feature = "cuda", feature = "mpi"))]
    #[doc(hidden)]
    fn nccl(&self) -> Option<&NcclGrads> {
        None
    }

    /// Rank 0's decision, on every rank.
    fn broadcast_bool(&self, value: bool) -> Result<bool> {
        let mut bytes = vec![u8::from(value)];
        self.broadcast(&mut bytes, 0)?;
        Ok(bytes.first().copied().unwrap_or(0) != 0)
    }
}

/// The only path by which the runtime writes or deletes files: a no-op on every rank but 0.
#[derive(Clone, Copy)]
pub struct RankZeroFs<'a> {
    strategy: &'a dyn Strategy,
}

impl<'a> RankZeroFs<'a> {
    /// The gate of `strategy`.
    pub fn new(strategy: &'a dyn Strategy) -> Self {
        Self { strategy }
    }

    /// `true` when this process performs writes.
    pub fn is_writer(&self) -> bool {
        self.strategy.is_global_zero()
    }

    /// Writes a checkpoint crash-safely (rank 0 only).
    pub fn write_checkpoint(&self, path: impl AsRef<Path>, ckpt: &Checkpoint) -> Result<()> {
        let path = path.as_ref();
        if self.is_writer() {
            write_checkpoint(path, ckpt)?;
        }
        Ok(())
    }

    /// Writes a whole small file (rank 0 only).
    pub fn write_file(&self, path: impl AsRef<Path>, contents: &[u8]) -> Result<()> {
        let path = path.as_ref();
        if self.is_writer() {
            if let Some(parent) = path.parent() {
                self.create_dir_all(parent)?;
            }
            std::fs::write(path, contents).map_err(|source| Error::Io {
                path: path.into(),
                op: "write",
                source,
            })?;
        }
        Ok(())
    }

    /// Appends to an existing file (rank 0 only).
    pub fn append_file(&self, path: impl AsRef<Path>, contents: &[u8]) -> Result<()> {
        let path = path.as_ref();
        if self.is_writer() {
            let io = |source| Error::Io {
                path: path.into(),
                op: "append to",
                source,
            };
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(io)?;
            std::io::Write::write_all(&mut file, contents).map_err(io)?;
        }
        Ok(())
    }

    /// Creates a directory and its parents (rank 0 only).
    pub fn create_dir_all(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if self.is_writer() && !path.as_os_str().is_empty() {
            std::fs::create_dir_all(path).map_err(|source| Error::Io {
                path: path.into(),
                op: "create directory",
                source,
            })?;
        }
        Ok(())
    }

    /// Makes `link` a relative symlink to `target` (rank 0 only), replacing whatever `link` was in one
    /// rename, so that it never goes missing; where symlinks are unavailable, a copy of `target`.
    pub fn link(&self, target: impl AsRef<Path>, link: impl AsRef<Path>) -> Result<()> {
        let (target, link) = (target.as_ref(), link.as_ref());
        if !self.is_writer() || target == link {
            return Ok(());
        }
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, op, source }
        };
        let dir = link.parent().unwrap_or(Path::new("."));
        let name = link.file_name().unwrap_or_default();
        let tmp = dir.join(crate::checkpoint::temporary_name(name));
        #[cfg(unix)]
        std::os::unix::fs::symlink(relative_to(target, dir), &tmp)
            .map_err(io("create symlink", &tmp))?;
        #[cfg(not(unix))]
        std::fs::copy(target, &tmp).map_err(io("copy", &tmp))?;
        std::fs::rename(&tmp, link).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io("rename the temporary link to", link)(e)
        })
    }

    /// Deletes a file (rank 0 only); a file that is already gone is not an error.
    pub fn remove_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if self.is_writer() {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Io {
                        path: path.into(),
                        op: "delete",
                        source: e,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `target` relative to directory `base` (both absolute).
#[cfg_attr(not(unix), allow(dead_code))]
fn relative_to(target: &Path, base: &Path) -> PathBuf {
    let t: Vec<_> = target.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// Strategies for the runtime's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{ReduceOp, Strategy};
    use crate::Result;

    /// Rank 1 of two whose collectives change nothing: the rank-zero gate must do nothing here.
    pub(crate) struct RankOne;

    impl Strategy for RankOne {
        fn rank(&self) -> usize {
            1
        }
        fn world_size(&self) -> usize {
            2
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn broadcast(&self, _data: &mut Vec<u8>, _root: usize) -> Result<()> {
            Ok(())
        }
        fn all_reduce(&self, _values: &mut [f64], _op: ReduceOp) -> Result<()> {
            Ok(())
        }
        fn all_reduce_f32(&self, _values: &mut [f32], _op: ReduceOp) -> Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::RankOne;
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn only_rank_zero_changes_files() {
        let dir = tempfile::tempdir().unwrap();
        let (file, sub) = (dir.path().join("a.txt"), dir.path().join("sub"));
        let zero = RankZeroFs::new(&SingleProcess);
        zero.write_file(&file, b"one\n").unwrap();
        zero.append_file(&file, b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");

        let one = RankZeroFs::new(&RankOne);
        let ckpt = Checkpoint::new("Net");
        one.write_file(dir.path().join("b.txt"), b"x").unwrap();
        one.append_file(&file, b"three\n").unwrap();
        one.create_dir_all(&sub).unwrap();
        one.write_checkpoint(dir.path().join("c.ckpt"), &ckpt)
            .unwrap();
        one.link(&file, dir.path().join("link")).unwrap();
        one.remove_file(&file).unwrap();
        assert_eq!(names(dir.path()), ["a.txt"]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn appending_to_a_missing_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("metrics.csv");
        let err = RankZeroFs::new(&SingleProcess)
            .append_file(&missing, b"1,2\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("append to") && err.contains("metrics.csv"),
            "{err}"
        );
    }

    /// The module doc's promise, kept: outside this gate and the checkpoint writer it calls, the
    /// runtime's code (its tests aside) neither writes, renames, links nor deletes a file itself.
    #[test]
    fn no_file_change_bypasses_the_gate() {
        fn visit(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    visit(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        visit(&src, &mut files);
        let exempt = [src.join("strategy/mod.rs"), src.join("checkpoint")];
        let changes = [
            "fs::write(",
            "fs::rename(",
            "fs::remove_file(",
            "fs::remove_dir",
            "fs::create_dir",
            "fs::copy(",
            "fs::hard_link(",
            "symlink(",
            "OpenOptions",
            "File::create(",
            "File::options(",
        ];
        let mut bypasses = Vec::new();
        for file in files
            .iter()
            .filter(|f| !exempt.iter().any(|e| f.starts_with(e)))
            // Test modules in files of their own (`mod tests;`, `lazy_tests.rs`) are tests too.
            .filter(|f| {
                !f.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s == "tests" || s.ends_with("_tests"))
            })
        {
            let text = std::fs::read_to_string(file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for change in changes.iter().filter(|c| code.contains(*c)) {
                bypasses.push(format!("{}: `{change}`", file.display()));
            }
        }
        assert!(bypasses.is_empty(), "{bypasses:#?}");
    }
}
