//! Adam and AdamW whose moments are saved by parameter name.

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::optim::{AdamConfig, WeightDecay};
use dfdx::shapes::Shape;
use dfdx::tensor::{Gradients, Tensor};
use serde::{Deserialize, Serialize};

use super::facts::{decay_of, GroupFacts, OptimizerFacts};
use super::group::{push_group_problem, weight_decay, Groups, GroupsRecord};
use super::named::{trainable_params, visit_params_mut, ParamVisitor, SlotState};
use super::select::Selection;
use super::sgd::{check_kind, encode_config, WeightDecayRecord};
use super::{Optimizer, ParamGroup, StateError};
use crate::checkpoint::OptimizerState;
use crate::device::Backend;
use crate::{device_err, Error, Result};

const SLOTS: [&str; 2] = ["exp_avg", "exp_avg_sq"];

/// Adam, and AdamW when its weight decay is [`WeightDecay::Decoupled`], computed by dfdx's own Adam
/// kernel, so that its updates equal `dfdx::optim::Adam`'s bit for bit.
///
/// Unlike dfdx's, its first and second moments are saved in checkpoints (as PyTorch's `exp_avg` and
/// `exp_avg_sq`) keyed by parameter name, with the step count.
///
/// ```
/// use dfdx::optim::{AdamConfig, WeightDecay};
/// use fulgur_runtime::optim::Adam;
///
/// type Dev = dfdx::tensor::Cpu;
/// let adam: Adam<Dev> = Adam::new(AdamConfig { lr: 3e-4, ..Default::default() });
/// assert_eq!(adam.kind(), "adam");
///
/// let adamw: Adam<Dev> = Adam::adamw(1e-3, 0.01);
/// assert_eq!(adamw.kind(), "adamw");
/// assert!(matches!(adamw.config().weight_decay, Some(WeightDecay::Decoupled(wd)) if wd == 0.01));
/// ```
///
/// With [parameter groups](ParamGroup), as PyTorch's `AdamW([{"params": biases, "weight_decay": 0.0}, …])`:
///
/// ```
/// use fulgur_runtime::optim::{Adam, ParamGroup};
///
/// let adamw: Adam<dfdx::tensor::Cpu> = Adam::adamw(1e-3, 0.01)
///     .group(ParamGroup::new("*.bias").weight_decay(0.0))
///     .group(ParamGroup::new("head.*").lr(1e-2));
/// assert_eq!(adamw.lr_of("head.0.weight"), 1e-2);
/// assert_eq!(adamw.lr_of("body.0.weight"), 1e-3);
/// ```
#[derive(Debug, Clone)]
pub struct Adam<D: Backend> {
    cfg: AdamConfig,
    groups: Groups,
    select: Selection,
    t: u64,
    moments: SlotState<D, 2>,
}

impl<D: Backend> Adam<D> {
    /// Adam configured by `cfg` (learning rate, betas, eps, weight decay).
    pub fn new(cfg: AdamConfig) -> Self {
        Self {
            cfg,
            groups: Groups::new(cfg.lr),
            select: Selection::default(),
            t: 0,
            moments: SlotState::new(SLOTS),
        }
    }

    /// AdamW: Adam with decoupled weight decay `weight_decay` and the default betas `(0.9, 0.999)` and eps
    /// `1e-8` (PyTorch's `AdamW(lr=lr, weight_decay=weight_decay)`).
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self::new(AdamConfig {
            lr,
            weight_decay: Some(WeightDecay::Decoupled(weight_decay)),
            ..Default::default()
        })
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
    /// [`ParamGroup`]); several calls add patterns. PyTorch's `Adam(self.generator.parameters())`: the
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
    pub fn config(&self) -> &AdamConfig {
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
        Ok(OptimizerState {
            kind: self.kind().to_string(),
            step: self.t,
            lr: self.cfg.lr,
            config: encode_config(&AdamRecord::new(&self.cfg, &self.groups, &self.select))?,
            params: self.moments.to_host()?,
        })
    }

    /// Updates applied so far (Adam's `t`).
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// `"adamw"` with decoupled weight decay, `"adam"` otherwise; the `kind` of its saved state.
    pub fn kind(&self) -> &'static str {
        kind_of(&self.cfg)
    }
}

fn kind_of(cfg: &AdamConfig) -> &'static str {
    match cfg.weight_decay {
        Some(WeightDecay::Decoupled(_)) => "adamw",
        _ => "adam",
    }
}

struct AdamStep<'a, D: Backend> {
    cfg: &'a AdamConfig,
    groups: &'a Groups,
    select: &'a Selection,
    t: i32,
    moments: &'a mut SlotState<D, 2>,
    grads: &'a mut Gradients<f32, D>,
}

impl<D: Backend> ParamVisitor<D> for AdamStep<'_, D> {
    fn visit<S: Shape>(&mut self, name: String, param: &mut Tensor<S, f32, D>) -> Result<()> {
        if !self.select.selects(&name) {
            return Ok(());
        }
        let grad = self.grads.get_or_alloc_mut(&*param).map_err(device_err)?;
        let group = self.groups.resolve(&name, self.cfg.lr);
        let cfg = AdamConfig {
            lr: group.lr,
            weight_decay: weight_decay(self.cfg.weight_decay, group.weight_decay),
            ..*self.cfg
        };
        let [m, v] = self.moments.get_or_alloc(name, param)?;
        cfg.try_update(self.t, param, m, v, grad)
            .map_err(device_err)
    }
}

/// Updates every trainable parameter. A parameter without a gradient in `grads` is updated with a zero
/// gradient (as dfdx does with gradients from `alloc_grads`), so its moments still act.
impl<M: TensorCollection<f32, D>, D: Backend> Optimizer<M, D> for Adam<D> {
    fn step(&mut self, module: &mut M, grads: &mut Gradients<f32, D>) -> Result<()> {
        let t = self.t + 1;
        // dfdx's kernel takes the step count as an i32 (for `powi`).
        let t_kernel = i32::try_from(t).map_err(|_| {
            Error::config(
                "max_steps",
                format!("Adam cannot take more than {} steps", i32::MAX),
            )
        })?;
        self.t = t;
        visit_params_mut(
            module,
            &mut AdamStep {
                cfg: &self.cfg,
                groups: &self.groups,
                select: &self.select,
                t: t_kernel,
                moments: &mut self.moments,
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
            momentum: None,
            betas: Some((self.cfg.betas[0], self.cfg.betas[1])),
            weight_decay: decay_of(self.cfg.weight_decay),
        };
        let name = match self.kind() {
            "adamw" => "AdamW",
            _ => "Adam",
        };
        OptimizerFacts::with_groups(name, own, &self.groups)
    }

    fn check_params(&self, module: &M) -> Result<()> {
        let params = trainable_params::<M, D>(module);
        self.select.check(params.keys().map(String::as_str))?;
        self.groups.check(params.keys().map(String::as_str))
    }

    /// Restores the moments, the step count, the learning rate and, as PyTorch does, the stored betas, eps,
    /// weight decay and group rates and weight decays, which replace the configured ones. Groups with
    /// other patterns than the stored ones are refused.
    fn load_state_dict(&mut self, module: &M, state: &OptimizerState) -> Result<(), StateError> {
        check_kind(state, self.kind())?;
        let mut problems = Vec::new();
        let mut groups = None;
        let cfg = match state.config.deserialized::<AdamRecord>() {
            Ok(rec) => {
                groups = push_group_problem(&self.groups, rec.param_groups.as_ref(), &mut problems);
                if let Err(e) = self.select.check_restored(rec.selected_params.as_deref()) {
                    problems.push(e);
                }
                let cfg = AdamConfig {
                    lr: state.lr,
                    betas: rec.betas,
                    eps: rec.eps,
                    weight_decay: rec.weight_decay.map(Into::into),
                };
                if kind_of(&cfg) != state.kind {
                    problems.push(format!(
                        "its `config` describes `{}`, not `{}`: its weight decay is {:?}",
                        kind_of(&cfg),
                        state.kind,
                        cfg.weight_decay
                    ));
                }
                Some(cfg)
            }
            Err(e) => {
                problems.push(format!("its `config` is not an Adam configuration ({e})"));
                None
            }
        };
        if i32::try_from(state.step).is_err() {
            problems.push(format!(
                "its `step` {} exceeds Adam's limit of {} steps",
                state.step,
                i32::MAX
            ));
        }
        for name in state.params.keys().filter(|n| !self.select.selects(n)) {
            problems.push(format!(
                "`{name}` has state, but none of the optimizer's `params` patterns selects it"
            ));
        }
        let moments = SlotState::from_host(SLOTS, module, state, problems)?;
        if let Some(cfg) = cfg {
            self.cfg = cfg;
        }
        if let Some(groups) = groups {
            self.groups = groups;
        }
        self.t = state.step;
        self.moments = moments;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct AdamRecord {
    lr: f64,
    betas: [f64; 2],
    eps: f64,
    weight_decay: Option<WeightDecayRecord>,
    /// Absent without groups, so that such checkpoints read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    param_groups: Option<GroupsRecord>,
    /// The `params` patterns; absent when every parameter is updated, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    selected_params: Option<Vec<String>>,
}

impl AdamRecord {
    fn new(cfg: &AdamConfig, groups: &Groups, select: &Selection) -> Self {
        Self {
            lr: cfg.lr,
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay.map(Into::into),
            param_groups: groups.record(),
            selected_params: select.record(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dfdx::prelude::*;

    use super::*;
    use crate::checkpoint::TensorData;
    use crate::optim::named::test_util::{
        assert_close, batches, bits, linear_grads, through_bytes, train, Mlp,
    };
    use crate::optim::Optimizer;

    #[test]
    fn constant_gradient_moves_each_parameter_by_lr_per_step() {
        // With a constant gradient, m_hat / sqrt(v_hat) = sign(g): PyTorch's Adam moves by lr per step.
        let dev = Cpu::default();
        let mut p = dev.tensor([1.0f32, -1.0]);
        let mut adam = Adam::new(AdamConfig {
            lr: 0.1,
            ..Default::default()
        });
        for e in [[0.9, -0.9], [0.8, -0.8], [0.7, -0.7]] {
            let mut grads = linear_grads(&p, [0.5, -2.0]);
            adam.step(&mut p, &mut grads).unwrap();
            assert_close(&p.as_vec(), &e);
        }
        assert_eq!(adam.steps(), 3);
    }

    #[test]
    fn adamw_decays_weights_apart_from_the_gradient() {
        // PyTorch's AdamW(lr=0.1, weight_decay=0.1): p = p * (1 - 0.01) - 0.1 * sign(g).
        let dev = Cpu::default();
        let mut p = dev.tensor([1.0f32]);
        let mut adamw = Adam::adamw(0.1, 0.1);
        for e in [0.89, 0.7811] {
            let mut grads = linear_grads(&p, [0.5]);
            adamw.step(&mut p, &mut grads).unwrap();
            assert_close(&p.as_vec(), &[e]);
        }
        assert_eq!(adamw.state_dict().unwrap().kind, "adamw");
    }

    #[test]
    fn state_round_trip_continues_bit_for_bit() {
        let dev = Cpu::seed_from_u64(11);
        let data = batches(&dev, 8);
        let mut model = dev.build_module::<Mlp, f32>();
        let mut adam = Adam::adamw(1e-2, 0.05);
        train(&mut model, &mut adam, &data[..4]);
        adam.set_lr(3e-3);

        let state = adam.state_dict().unwrap();
        assert_eq!(
            (state.kind.as_str(), state.step, state.lr),
            ("adamw", 4, 3e-3)
        );
        assert!(state
            .params
            .values()
            .all(|s| s.keys().eq(["exp_avg", "exp_avg_sq"])));
        assert_eq!(state.params["2.weight"]["exp_avg_sq"].shape(), [2, 5]);

        // Restored before its first step, the new optimizer must start from the stored moments and `t`.
        let mut resumed_model = model.clone();
        let mut resumed = Adam::adamw(1.0, 0.5);
        resumed
            .load_state_dict(&resumed_model, &through_bytes(&state))
            .unwrap();
        assert_eq!(resumed.lr(), 3e-3);
        assert_eq!(resumed.steps(), 4);
        assert!(
            matches!(resumed.config().weight_decay, Some(WeightDecay::Decoupled(w)) if w == 0.05)
        );

        train(&mut model, &mut adam, &data[4..]);
        train(&mut resumed_model, &mut resumed, &data[4..]);
        assert_eq!(bits(&model), bits(&resumed_model));
        assert_eq!(adam.state_dict().unwrap(), resumed.state_dict().unwrap());
    }

    #[test]
    fn loading_reports_every_problem_at_once_and_changes_nothing() {
        let dev = Cpu::seed_from_u64(3);
        let mut model = dev.build_module::<Mlp, f32>();
        let mut adam = Adam::new(AdamConfig::default());
        train(&mut model, &mut adam, &batches(&dev, 1));
        let mut state = adam.state_dict().unwrap();

        let bias = state.params.get_mut("0.bias").unwrap();
        bias.remove("exp_avg_sq");
        bias.insert(
            "momentum_buffer".into(),
            TensorData::from_f32(vec![5], vec![0.0; 5]),
        );
        state.params.get_mut("2.weight").unwrap().insert(
            "exp_avg".into(),
            TensorData::from_f32(vec![3], vec![0.0; 3]),
        );
        state.params.get_mut("2.bias").unwrap().insert(
            "exp_avg".into(),
            TensorData::from_f64(vec![2], vec![0.0; 2]),
        );
        state.params.insert("1.weight".into(), BTreeMap::new());

        let mut fresh = Adam::new(AdamConfig::default());
        let err = fresh.load_state_dict(&model, &state).unwrap_err();
        assert_eq!(
            err.0,
            "the `adam` optimizer state does not fit the module (5 problems): `0.bias` lacks `exp_avg_sq`; \
             `0.bias.momentum_buffer` is not a state slot of `adam`; `1.weight` is not a trainable parameter of the \
             module; `2.bias.exp_avg`: expected f32, found f64; `2.weight.exp_avg`: expected 10 elements (shape \
             [2, 5]), found 3 (shape [3]); the module's trainable parameters are `0.bias`, `0.weight`, `2.bias`, \
             `2.weight`"
        );
        assert_eq!(fresh.steps(), 0);
        assert!(fresh.state_dict().unwrap().params.is_empty());
    }

    #[test]
    fn adam_state_is_refused_by_adamw() {
        let dev = Cpu::default();
        let model = dev.build_module::<Mlp, f32>();
        let state = Adam::<Cpu>::new(AdamConfig::default())
            .state_dict()
            .unwrap();
        let err = Adam::adamw(1e-3, 1e-2)
            .load_state_dict(&model, &state)
            .unwrap_err();
        assert!(err.0.starts_with(
            "the checkpoint holds `adam` optimizer state, but the configured optimizer is `adamw`"
        ));
    }

    #[test]
    fn a_malformed_config_is_reported() {
        let dev = Cpu::default();
        let model = dev.build_module::<Mlp, f32>();
        let mut state = Adam::<Cpu>::new(AdamConfig::default())
            .state_dict()
            .unwrap();
        state.config = ciborium::Value::Text("betas?".into());
        let err = Adam::new(AdamConfig::default())
            .load_state_dict(&model, &state)
            .unwrap_err();
        assert!(
            err.0.contains("its `config` is not an Adam configuration"),
            "{}",
            err.0
        );
    }
}
