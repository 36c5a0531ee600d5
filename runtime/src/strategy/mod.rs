//! How processes cooperate: rank, world size, collectives, and the rank-zero gate for files.
//!
//! Only the single-process strategy exists today. The trainer talks to processes only through
//! [`Strategy`], and writes and deletes files only through [`RankZeroFs`], so a data-parallel strategy
//! (MPI) plugs in without reshaping the trainer.

mod single;

use std::path::{Path, PathBuf};

use crate::checkpoint::{write_checkpoint, Checkpoint};
use crate::{Error, Result};

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
    pub fn write_checkpoint(&self, path: &Path, ckpt: &Checkpoint) -> Result<()> {
        if self.is_writer() {
            write_checkpoint(path, ckpt)?;
        }
        Ok(())
    }

    /// Writes a whole small file (rank 0 only).
    pub fn write_file(&self, path: &Path, contents: &[u8]) -> Result<()> {
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

    /// Creates a directory and its parents (rank 0 only).
    pub fn create_dir_all(&self, path: &Path) -> Result<()> {
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
    pub fn link(&self, target: &Path, link: &Path) -> Result<()> {
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
    pub fn remove_file(&self, path: &Path) -> Result<()> {
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
