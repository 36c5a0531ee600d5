//! Snapshots: checkpoints whose tensors still share the live buffers (see [`TensorData`]), and their
//! copy to the host for callers that read the values.

use super::{Checkpoint, OptimizerState, TensorData};
use crate::{Error, Result};

/// Copies every snapshot tensor of `ckpt` to the host, so that reading it never fails and it holds no
/// buffer of the live state.
pub(crate) fn to_host(ckpt: &mut Checkpoint) -> Result<()> {
    fn tensor(t: &mut TensorData) -> Result<()> {
        if t.source().is_some() {
            *t = t.to_host().map_err(Error::Device)?;
        }
        Ok(())
    }
    fn optimizer(o: &mut OptimizerState) -> Result<()> {
        o.params
            .values_mut()
            .flat_map(|slots| slots.values_mut())
            .try_for_each(tensor)
    }
    ckpt.state_dict.values_mut().try_for_each(tensor)?;
    if let Some(o) = &mut ckpt.optimizer {
        optimizer(o)?;
    }
    ckpt.more_optimizers
        .iter_mut()
        .try_for_each(|e| optimizer(&mut e.optimizer))
}
