//! What an optimizer tells callbacks about itself: its name and, per parameter group, the learning rate,
//! momentum or betas and weight decay in force (what PyTorch's `optimizer.param_groups` shows and
//! Lightning's `LearningRateMonitor` reads).

use dfdx::optim::{Momentum, WeightDecay};

use super::group::Groups;

/// An optimizer's settings in force, as [`TrainerState::optimizers`](crate::trainer::TrainerState::optimizers)
/// lists them: refreshed when `fit` starts and after every training batch, so that a scheduler's
/// changes show.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerFacts {
    /// The optimizer's class name as PyTorch spells it: `"Adam"`, `"AdamW"`, `"SGD"`.
    pub name: String,
    /// Its parameter groups: the first holds the parameters no [`ParamGroup`](super::ParamGroup)
    /// matches (the optimizer's own settings), then one per `ParamGroup`, in order.
    pub groups: Vec<GroupFacts>,
}

/// One parameter group's settings in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupFacts {
    /// The learning rate the next update applies.
    pub lr: f64,
    /// SGD's momentum factor (`None` without momentum, and for Adam).
    pub momentum: Option<f64>,
    /// Adam's `(beta1, beta2)` (`None` for SGD).
    pub betas: Option<(f64, f64)>,
    /// The weight decay coefficient (0 without weight decay).
    pub weight_decay: f64,
}

impl OptimizerFacts {
    /// An optimizer with one group that only knows its learning rate: what
    /// [`Optimizer::facts`](super::Optimizer::facts) reports unless an optimizer says more.
    pub fn lr_only(name: impl Into<String>, lr: f64) -> Self {
        Self {
            name: name.into(),
            groups: vec![GroupFacts {
                lr,
                momentum: None,
                betas: None,
                weight_decay: 0.0,
            }],
        }
    }

    /// The facts of an optimizer whose own group is `own`, with `groups` deriving the others from it.
    pub(crate) fn with_groups(name: &str, own: GroupFacts, groups: &Groups) -> Self {
        let mut all = vec![own];
        all.extend(groups.groups.iter().map(|g| {
            let resolved = groups.resolve_group(g, own.lr);
            GroupFacts {
                lr: resolved.lr,
                weight_decay: resolved.weight_decay.unwrap_or(own.weight_decay),
                ..own
            }
        }));
        Self {
            name: name.to_string(),
            groups: all,
        }
    }
}

/// The coefficient of a dfdx weight decay, L2 or decoupled; 0 without one.
pub(crate) fn decay_of(w: Option<WeightDecay>) -> f64 {
    match w {
        Some(WeightDecay::L2(w) | WeightDecay::Decoupled(w)) => w,
        None => 0.0,
    }
}

/// The factor of a dfdx momentum, classic or Nesterov.
pub(crate) fn momentum_of(m: Option<Momentum>) -> Option<f64> {
    match m {
        Some(Momentum::Classic(m) | Momentum::Nesterov(m)) => Some(m),
        None => None,
    }
}
