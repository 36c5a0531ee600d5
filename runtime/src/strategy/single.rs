use super::{ReduceOp, Strategy};
use crate::Result;

/// One process, one device: every collective is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Strategy for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
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
