//! Rank 0's outcome of a file operation, on every rank.

use std::path::Path;

use super::RankZeroFs;
use crate::{Error, Result};

impl RankZeroFs<'_> {
    /// Rank 0's `result` of the file operation `op` on `path`, on every rank: `Ok` everywhere when rank 0
    /// succeeded, an error everywhere when it failed (an I/O error stays one, so that
    /// `keep_training_on_checkpoint_error` takes the same branch on every rank). Every rank must call
    /// it at the same point; it returns on the other ranks once rank 0 is done, so a file rank 0 wrote
    /// is complete by then. In a single process, `result` itself.
    pub fn agree(&self, result: Result<()>, path: &Path, op: &'static str) -> Result<()> {
        if self.strategy.world_size() <= 1 {
            return result;
        }
        // Empty: success. Otherwise a kind byte (1: an I/O error) and rank 0's message.
        let mut bytes = Vec::new();
        if let Err(e) = &result {
            bytes.push(u8::from(e.is_io()));
            bytes.extend_from_slice(e.to_string().as_bytes());
        }
        self.strategy.broadcast(&mut bytes, 0)?;
        if self.is_writer() {
            return result;
        }
        let Some((&io, message)) = bytes.split_first() else {
            return Ok(());
        };
        let message = format!("on rank 0: {}", String::from_utf8_lossy(message));
        Err(if io == 1 {
            Error::Io {
                path: path.into(),
                op,
                source: std::io::Error::other(message),
            }
        } else {
            Error::user(message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{ReduceOp, Strategy};

    /// Rank 1 of two, to whom rank 0 "sends" `from_zero`.
    struct RankOne {
        from_zero: Vec<u8>,
    }

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
        fn broadcast(&self, data: &mut Vec<u8>, _root: usize) -> Result<()> {
            data.clone_from(&self.from_zero);
            Ok(())
        }
        fn all_reduce(&self, _: &mut [f64], _: ReduceOp) -> Result<()> {
            Ok(())
        }
        fn all_reduce_f32(&self, _: &mut [f32], _: ReduceOp) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn other_ranks_fail_as_rank_zero_did() {
        let path = Path::new("ckpts/last.ckpt");
        let agree = |from_zero: &[u8]| {
            let rank_one = RankOne {
                from_zero: from_zero.to_vec(),
            };
            RankZeroFs::new(&rank_one).agree(Ok(()), path, "write")
        };
        assert!(agree(b"").is_ok());
        let io = agree(b"\x01no space left on device").unwrap_err();
        assert!(io.is_io(), "{io:?}");
        let text = io.to_string();
        assert!(
            text.contains("last.ckpt") && text.contains("on rank 0: no space left on device"),
            "{text}"
        );
        let other = agree(b"\x00bad template").unwrap_err();
        assert!(!other.is_io() && other.to_string().contains("on rank 0: bad template"));
    }
}
