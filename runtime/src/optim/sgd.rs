//! Stochastic gradient descent whose momentum buffers are saved by parameter name.

use std::collections::BTreeMap;

use ciborium::Value;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::optim::{Momentum, SgdConfig, WeightDecay};
use dfdx::shapes::Shape;
use dfdx::tensor::{Gradients, Tensor};
use serde::{Deserialize, Serialize};

use super::facts::{decay_of, momentum_of, GroupFacts, OptimizerFacts};
use super::group::{push_group_problem, weight_decay, Groups, GroupsRecord};
use super::named::{trainable_params, visit_params_mut, ParamVisitor, SlotState};
use super::select::Selection;
use super::{Optimizer, ParamGroup, StateError};
use crate::checkpoint::OptimizerState;
use crate::device::Backend;
use crate::{device_err, Result};

const SLOTS: [&str; 1] = ["momentum_buffer"];

/// Stochastic gradient descent with optional (Nesterov) momentum and weight decay, computed by dfdx's
/// own SGD kernel, so that its updates equal `dfdx::optim::Sgd`'s bit for bit.
///
/// Unlike dfdx's, its momentum buffers are saved in checkpoints (as PyTorch's `momentum_buffer`) keyed by
/// parameter name.
///
/// ```
/// use dfdx::optim::{Momentum, SgdConfig, WeightDecay};
/// use fulgur_runtime::optim::Sgd;
///
/// let sgd: Sgd<dfdx::tensor::Cpu> = Sgd::new(SgdConfig {
///     lr: 0.1,
///     momentum: Some(Momentum::Nesterov(0.9)),
///     weight_decay: Some(WeightDecay::L2(1e-4)),
/// });
/// assert_eq!(sgd.config().lr, 0.1);
///
/// // No weight decay on biases; a slower first layer.
/// use fulgur_runtime::optim::ParamGroup;
/// let sgd = sgd
///     .group(ParamGroup::new("*.bias").weight_decay(0.0))
///     .group(ParamGroup::new("0.*").lr(0.01));
/// assert_eq!(sgd.lr_of("0.weight"), 0.01);
/// assert_eq!(sgd.groups().len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Sgd<D: Backend> {
    cfg: SgdConfig,
    groups: Groups,
    select: Selection,
    steps: u64,
    velocity: SlotState<D, 1>,
}

impl<D: Backend> Sgd<D> {
    /// SGD configured by `cfg` (learning rate, momentum, weight decay).
    pub fn new(cfg: SgdConfig) -> Self {
        Self {
            cfg,
            groups: Groups::new(cfg.lr),
            select: Selection::default(),
            steps: 0,
            velocity: SlotState::new(SLOTS),
        }
    }

    /// Adds a parameter group; a parameter belongs to the first group whose pattern matches its name,
    /// and follows this optimizer's configuration when none does.
    pub fn group(mut self, group: ParamGroup) -> Self {
        self.groups.groups.push(group);
        self
    }

    /// The parameter groups, in the order they are tried.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups.groups
    }

    /// Restricts the optimizer to the parameters whose names match `pattern` (the glob syntax of
    /// [`ParamGroup`]); several calls add patterns. PyTorch's `Sgd(self.generator.parameters())`: the
    /// parameters no pattern selects are never updated by this optimizer and have no state in it, so
    /// that two optimizers of one module (manual optimization) each move their own part. A pattern that
    /// selects no parameter fails `fit` at start. Without a call, every trainable parameter is updated.
    pub fn params(mut self, pattern: &str) -> Self {
        self.select.add(pattern);
        self
    }

    /// The patterns given to [`params`](Self::params), in order; empty when every parameter is updated.
    pub fn selected_params(&self) -> Vec<&str> {
        self.select.patterns()
    }

    /// The learning rate the next update applies to parameter `name`: its group's rate times the factor
    /// the scheduler has applied to the optimizer's rate, or the optimizer's rate in force.
    pub fn lr_of(&self, name: &str) -> f64 {
        self.groups.resolve(name, self.cfg.lr).lr
    }

    /// The configuration in force (its `lr` follows [`Optimizer::set_lr`]).
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }

    /// The learning rate in force.
    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    /// Sets the learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// The state to store in a checkpoint (see [`Optimizer::state_dict`]); callable without naming the
    /// module type.
    pub fn state_dict(&self) -> Result<OptimizerState> {
        // Without momentum the kernel ignores its buffers, and PyTorch saves none either.
        let params = if self.cfg.momentum.is_some() {
            self.velocity.to_host()?
        } else {
            BTreeMap::new()
        };
        Ok(OptimizerState {
            kind: "sgd".to_string(),
            step: self.steps,
            lr: self.cfg.lr,
            config: encode_config(&SgdRecord::new(&self.cfg, &self.groups, &self.select))?,
            params,
        })
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

struct SgdStep<'a, D: Backend> {
    cfg: &'a SgdConfig,
    groups: &'a Groups,
    select: &'a Selection,
    velocity: &'a mut SlotState<D, 1>,
    grads: &'a mut Gradients<f32, D>,
}

impl<D: Backend> ParamVisitor<D> for SgdStep<'_, D> {
    fn visit<S: Shape>(&mut self, name: String, param: &mut Tensor<S, f32, D>) -> Result<()> {
        if !self.select.selects(&name) {
            return Ok(());
        }
        let grad = self.grads.get_or_alloc_mut(&*param).map_err(device_err)?;
        let group = self.groups.resolve(&name, self.cfg.lr);
        let cfg = SgdConfig {
            lr: group.lr,
            weight_decay: weight_decay(self.cfg.weight_decay, group.weight_decay),
            ..*self.cfg
        };
        let [velocity] = self.velocity.get_or_alloc(name, param)?;
        cfg.try_update(param, velocity, grad).map_err(device_err)
    }
}

/// Updates every trainable parameter. A parameter without a gradient in `grads` is updated with a zero
/// gradient (as dfdx does with gradients from `alloc_grads`), so momentum and weight decay still act.
impl<M: TensorCollection<f32, D>, D: Backend> Optimizer<M, D> for Sgd<D> {
    fn step(&mut self, module: &mut M, grads: &mut Gradients<f32, D>) -> Result<()> {
        self.steps += 1;
        visit_params_mut(
            module,
            &mut SgdStep {
                cfg: &self.cfg,
                groups: &self.groups,
                select: &self.select,
                velocity: &mut self.velocity,
                grads,
            },
        )
    }

    fn lr(&self) -> f64 {
        Self::lr(self)
    }

    fn set_lr(&mut self, lr: f64) {
        Self::set_lr(self, lr)
    }

    fn state_dict(&self) -> Result<OptimizerState> {
        Self::state_dict(self)
    }

    fn facts(&self) -> OptimizerFacts {
        let own = GroupFacts {
            lr: self.cfg.lr,
            momentum: momentum_of(self.cfg.momentum),
            betas: None,
            weight_decay: decay_of(self.cfg.weight_decay),
        };
        OptimizerFacts::with_groups("SGD", own, &self.groups)
    }

    fn check_params(&self, module: &M) -> Result<()> {
        let params = trainable_params::<M, D>(module);
        self.select.check(params.keys().map(String::as_str))?;
        self.groups.check(params.keys().map(String::as_str))
    }

    /// Restores the buffers, the step count, the learning rate and, as PyTorch does, the stored
    /// momentum, weight decay and group rates and weight decays, which replace the configured ones.
    /// Groups with other patterns than the stored ones are refused.
    fn load_state_dict(&mut self, module: &M, state: &OptimizerState) -> Result<(), StateError> {
        check_kind(state, "sgd")?;
        let mut problems = Vec::new();
        let mut groups = None;
        let cfg = match state.config.deserialized::<SgdRecord>() {
            Ok(rec) => {
                groups = push_group_problem(&self.groups, rec.param_groups.as_ref(), &mut problems);
                if let Err(e) = self.select.check_restored(rec.selected_params.as_deref()) {
                    problems.push(e);
                }
                Some(SgdConfig {
                    lr: state.lr,
                    momentum: rec.momentum.map(Into::into),
                    weight_decay: rec.weight_decay.map(Into::into),
                })
            }
            Err(e) => {
                problems.push(format!("its `config` is not an SGD configuration ({e})"));
                None
            }
        };
        for name in state.params.keys().filter(|n| !self.select.selects(n)) {
            problems.push(format!(
                "`{name}` has state, but none of the optimizer's `params` patterns selects it"
            ));
        }
        let velocity = SlotState::from_host(SLOTS, module, state, problems)?;
        if let Some(cfg) = cfg {
            self.cfg = cfg;
        }
        if let Some(groups) = groups {
            self.groups = groups;
        }
        self.steps = state.step;
        self.velocity = velocity;
        Ok(())
    }
}

/// Fails unless `state` was written by an optimizer of kind `kind`.
pub(super) fn check_kind(state: &OptimizerState, kind: &str) -> Result<(), StateError> {
    if state.kind == kind {
        return Ok(());
    }
    Err(StateError(format!(
        "the checkpoint holds `{}` optimizer state, but the configured optimizer is `{kind}`; configure the \
         optimizer the checkpoint was trained with",
        state.kind
    )))
}

/// Encodes a configuration record as the checkpoint's `config` value.
pub(super) fn encode_config(record: &impl Serialize) -> Result<Value> {
    Value::serialized(record).map_err(|e| {
        crate::Error::config(
            "optimizer",
            format!("cannot encode the optimizer configuration: {e}"),
        )
    })
}

#[derive(Serialize, Deserialize)]
struct SgdRecord {
    lr: f64,
    momentum: Option<MomentumRecord>,
    weight_decay: Option<WeightDecayRecord>,
    /// Absent without groups, so that such checkpoints read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    param_groups: Option<GroupsRecord>,
    /// The `params` patterns; absent when every parameter is updated, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    selected_params: Option<Vec<String>>,
}

impl SgdRecord {
    fn new(cfg: &SgdConfig, groups: &Groups, select: &Selection) -> Self {
        Self {
            lr: cfg.lr,
            momentum: cfg.momentum.map(Into::into),
            weight_decay: cfg.weight_decay.map(Into::into),
            param_groups: groups.record(),
            selected_params: select.record(),
        }
    }
}

/// `{"kind": "nesterov", "value": 0.9}`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
enum MomentumRecord {
    Classic(f64),
    Nesterov(f64),
}

impl From<Momentum> for MomentumRecord {
    fn from(m: Momentum) -> Self {
        match m {
            Momentum::Classic(u) => Self::Classic(u),
            Momentum::Nesterov(u) => Self::Nesterov(u),
        }
    }
}

impl From<MomentumRecord> for Momentum {
    fn from(m: MomentumRecord) -> Self {
        match m {
            MomentumRecord::Classic(u) => Self::Classic(u),
            MomentumRecord::Nesterov(u) => Self::Nesterov(u),
        }
    }
}

/// `{"kind": "decoupled", "value": 0.01}`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub(super) enum WeightDecayRecord {
    L2(f64),
    Decoupled(f64),
}

impl From<WeightDecay> for WeightDecayRecord {
    fn from(w: WeightDecay) -> Self {
        match w {
            WeightDecay::L2(x) => Self::L2(x),
            WeightDecay::Decoupled(x) => Self::Decoupled(x),
        }
    }
}

impl From<WeightDecayRecord> for WeightDecay {
    fn from(w: WeightDecayRecord) -> Self {
        match w {
            WeightDecayRecord::L2(x) => Self::L2(x),
            WeightDecayRecord::Decoupled(x) => Self::Decoupled(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::*;
    use crate::optim::named::test_util::{
        assert_close, batches, bits, linear_grads, through_bytes, train, Mlp,
    };
    use crate::optim::Optimizer;

    fn nesterov() -> SgdConfig {
        SgdConfig {
            lr: 0.1,
            momentum: Some(Momentum::Nesterov(0.9)),
            weight_decay: None,
        }
    }

    #[test]
    fn nesterov_momentum_matches_hand_computed_values() {
        // PyTorch's SGD(lr=0.1, momentum=0.9, nesterov=True) on constant gradients [0.5, -1].
        let dev = Cpu::default();
        let mut p = dev.tensor([1.0f32, 2.0]);
        let mut sgd = Sgd::new(nesterov());
        let expected = [[0.905, 2.19], [0.7695, 2.461], [0.59755, 2.8049]];
        for e in expected {
            let mut grads = linear_grads(&p, [0.5, -1.0]);
            sgd.step(&mut p, &mut grads).unwrap();
            assert_close(&p.as_vec(), &e);
        }
        assert_eq!(sgd.steps(), 3);
    }

    #[test]
    fn l2_weight_decay_is_added_to_the_gradient() {
        let dev = Cpu::default();
        let mut p = dev.tensor([2.0f32]);
        let mut sgd = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: None,
            weight_decay: Some(WeightDecay::L2(0.5)),
        });
        for e in [1.9, 1.805] {
            let mut grads = linear_grads(&p, [0.0]);
            sgd.step(&mut p, &mut grads).unwrap();
            assert_close(&p.as_vec(), &[e]);
        }
    }

    #[test]
    fn set_lr_changes_the_next_update() {
        let dev = Cpu::default();
        let mut p = dev.tensor([1.0f32]);
        let mut sgd = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: None,
            weight_decay: None,
        });
        sgd.set_lr(0.5);
        let mut grads = linear_grads(&p, [1.0]);
        sgd.step(&mut p, &mut grads).unwrap();
        assert_close(&p.as_vec(), &[0.5]);
    }

    #[test]
    fn state_round_trip_continues_bit_for_bit() {
        let dev = Cpu::seed_from_u64(7);
        let data = batches(&dev, 6);
        let cfg = SgdConfig {
            lr: 0.05,
            momentum: Some(Momentum::Nesterov(0.9)),
            weight_decay: Some(WeightDecay::L2(1e-2)),
        };
        let mut model = dev.build_module::<Mlp, f32>();
        let mut sgd = Sgd::new(cfg);
        train(&mut model, &mut sgd, &data[..3]);

        let state = sgd.state_dict().unwrap();
        assert_eq!(state.kind, "sgd");
        assert_eq!(state.step, 3);
        let names: Vec<&str> = state.params.keys().map(String::as_str).collect();
        assert_eq!(names, ["0.bias", "0.weight", "2.bias", "2.weight"]);
        assert!(state
            .params
            .values()
            .all(|s| s.keys().eq(["momentum_buffer"])));
        assert_eq!(state.params["0.weight"]["momentum_buffer"].shape(), [5, 3]);

        // A fresh optimizer configured differently: the stored configuration wins, as in PyTorch.
        let mut resumed_model = model.clone();
        let mut resumed = Sgd::new(SgdConfig {
            lr: 1.0,
            momentum: None,
            weight_decay: None,
        });
        resumed
            .load_state_dict(&resumed_model, &through_bytes(&state))
            .unwrap();
        assert_eq!(resumed.config().lr, 0.05);
        assert!(matches!(resumed.config().momentum, Some(Momentum::Nesterov(u)) if u == 0.9));
        assert!(matches!(resumed.config().weight_decay, Some(WeightDecay::L2(w)) if w == 1e-2));

        train(&mut model, &mut sgd, &data[3..]);
        train(&mut resumed_model, &mut resumed, &data[3..]);
        assert_eq!(bits(&model), bits(&resumed_model));
        assert_eq!(resumed.steps(), 6);
    }

    #[test]
    fn without_momentum_no_buffers_are_saved() {
        let dev = Cpu::seed_from_u64(0);
        let data = batches(&dev, 1);
        let mut model = dev.build_module::<Mlp, f32>();
        let mut sgd = Sgd::new(SgdConfig::default());
        train(&mut model, &mut sgd, &data);
        let state = sgd.state_dict().unwrap();
        assert!(state.params.is_empty());
        let mut other = Sgd::new(SgdConfig::default());
        other.load_state_dict(&model, &state).unwrap();
        assert_eq!(other.steps(), 1);
    }

    #[test]
    fn state_of_another_optimizer_is_refused_by_kind() {
        let dev = Cpu::default();
        let model = dev.build_module::<Mlp, f32>();
        let state = OptimizerState {
            kind: "adam".into(),
            step: 1,
            lr: 1e-3,
            config: ciborium::Value::Null,
            params: BTreeMap::new(),
        };
        let err = Sgd::new(nesterov())
            .load_state_dict(&model, &state)
            .unwrap_err();
        assert_eq!(
            err.0,
            "the checkpoint holds `adam` optimizer state, but the configured optimizer is `sgd`; configure the \
             optimizer the checkpoint was trained with"
        );
    }
}
