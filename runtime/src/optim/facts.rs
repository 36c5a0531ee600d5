//! What an optimizer tells callbacks about itself: its name and, per parameter group, the learning rate,
//! momentum or betas and weight decay in force (what PyTorch's `optimizer.param_groups` shows and
//! Lightning's `LearningRateMonitor` reads).

use dfdx::optim::{Momentum, WeightDecay};

use super::group::Groups;
use super::Interval;

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
    /// When its learning-rate scheduler steps; `None` without a scheduler.
    pub scheduler: Option<Interval>,
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
            scheduler: None,
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
            scheduler: None,
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

#[cfg(test)]
mod tests {
    use dfdx::optim::{Momentum, SgdConfig, WeightDecay};
    use dfdx::tensor::Cpu;

    use super::*;
    use crate::optim::{Adam, Optimizer, ParamGroup, Sgd};

    fn facts_of(o: &dyn Optimizer<(), Cpu>) -> OptimizerFacts {
        o.facts()
    }

    #[test]
    fn adamw_lists_its_own_group_then_each_param_group_following_the_scheduler() {
        let mut adamw: Adam<Cpu> = Adam::adamw(1e-3, 0.01)
            .group(ParamGroup::new("*.bias").weight_decay(0.0))
            .group(ParamGroup::new("head.*").lr(1e-2));
        let own = GroupFacts {
            lr: 1e-3,
            momentum: None,
            betas: Some((0.9, 0.999)),
            weight_decay: 0.01,
        };
        let facts = facts_of(&adamw);
        assert_eq!(facts.name, "AdamW");
        assert_eq!(
            facts.groups,
            [
                own,
                GroupFacts {
                    weight_decay: 0.0,
                    ..own
                },
                GroupFacts { lr: 1e-2, ..own },
            ]
        );
        // A scheduler halving the optimizer's rate halves the group's own rate too.
        Optimizer::<(), Cpu>::set_lr(&mut adamw, 5e-4);
        let groups = facts_of(&adamw).groups;
        assert_eq!((groups[0].lr, groups[2].lr), (5e-4, 5e-3));
    }

    #[test]
    fn sgd_reports_momentum_and_l2_decay_and_plain_adam_its_name() {
        let sgd: Sgd<Cpu> = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: Some(Momentum::Nesterov(0.8)),
            weight_decay: Some(WeightDecay::L2(1e-4)),
        });
        let facts = facts_of(&sgd);
        assert_eq!(facts.name, "SGD");
        assert_eq!(
            facts.groups,
            [GroupFacts {
                lr: 0.1,
                momentum: Some(0.8),
                betas: None,
                weight_decay: 1e-4,
            }]
        );
        let adam: Adam<Cpu> = Adam::new(Default::default());
        assert_eq!(facts_of(&adam).name, "Adam");
        assert_eq!(facts_of(&adam).groups[0].weight_decay, 0.0);
    }
}
