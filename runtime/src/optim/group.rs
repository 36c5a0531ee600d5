//! Parameter groups: a learning rate and a weight decay for the parameters whose names match a pattern.

use dfdx::optim::WeightDecay;
use serde::{Deserialize, Serialize};

use super::named::list;
use crate::{Error, Result};

/// The parameters whose names match a glob `pattern`, with their own learning rate and weight decay
/// (PyTorch's parameter groups, selected by name).
///
/// In the pattern, `*` stands for any run of characters (dots included) and `?` for one character;
/// names are those of the module's `TensorCollection` (`0.weight`, `encoder.1.bias`). A parameter
/// belongs to the first group whose pattern matches its name; the others follow the optimizer's own
/// configuration. A group's learning rate follows the scheduler in proportion: when the optimizer's
/// rate is `f` times the one it was configured with, the group's is `f` times its own.
///
/// ```
/// use fulgur_runtime::optim::ParamGroup;
///
/// let no_decay = ParamGroup::new("*.bias").weight_decay(0.0);
/// assert!(no_decay.matches("encoder.0.bias"));
/// assert!(!no_decay.matches("encoder.0.weight"));
/// assert_eq!(no_decay.pattern(), "*.bias");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamGroup {
    pattern: String,
    lr: Option<f64>,
    weight_decay: Option<f64>,
}

impl ParamGroup {
    /// The parameters whose names match `pattern`, with the optimizer's learning rate and weight decay
    /// until [`lr`](Self::lr) or [`weight_decay`](Self::weight_decay) says otherwise.
    pub fn new(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            lr: None,
            weight_decay: None,
        }
    }

    /// The group's learning rate (before the scheduler's factor).
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = Some(lr);
        self
    }

    /// The group's weight decay coefficient, of the optimizer's kind (decoupled for AdamW, L2 otherwise);
    /// `0.0` turns it off.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }

    /// The glob pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether parameter `name` matches the pattern.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.pattern.as_bytes(), name.as_bytes())
    }
}

/// `*` is any run of bytes, `?` one byte (names are ASCII in practice; a multi-byte character simply
/// needs as many `?`).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more byte and retry.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// An optimizer's groups and the learning rate it was configured with, against which the scheduler's
/// factor is measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Groups {
    pub(crate) groups: Vec<ParamGroup>,
    pub(crate) base_lr: f64,
}

/// What a parameter's update uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Resolved {
    pub(crate) lr: f64,
    /// `None`: the optimizer's own weight decay.
    pub(crate) weight_decay: Option<f64>,
}

impl Groups {
    pub(crate) fn new(base_lr: f64) -> Self {
        Self {
            groups: Vec::new(),
            base_lr,
        }
    }

    /// The rate and weight decay of parameter `name` when the optimizer's rate in force is `lr`.
    pub(crate) fn resolve(&self, name: &str, lr: f64) -> Resolved {
        match self.groups.iter().find(|g| g.matches(name)) {
            Some(g) => self.resolve_group(g, lr),
            None => Resolved {
                lr,
                weight_decay: None,
            },
        }
    }

    /// The rate and weight decay of group `g` (one of these groups) when the optimizer's rate in force
    /// is `lr`.
    pub(crate) fn resolve_group(&self, g: &ParamGroup, lr: f64) -> Resolved {
        let lr = match g.lr {
            // A base rate of 0 gives no factor to measure; the group then keeps its own rate.
            Some(own) if self.base_lr != 0.0 => own * (lr / self.base_lr),
            Some(own) => own,
            None => lr,
        };
        Resolved {
            lr,
            weight_decay: g.weight_decay,
        }
    }

    /// Fails when a group's pattern matches none of `names`, naming the pattern and the parameters.
    pub(crate) fn check<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let names: Vec<&str> = names.into_iter().collect();
        let problems: Vec<String> = self
            .groups
            .iter()
            .filter(|g| !names.iter().any(|n| g.matches(n)))
            .map(|g| {
                let hint = fulgur_rules::suggest::did_you_mean(&g.pattern, names.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                format!("`{}`{hint}", g.pattern)
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::config(
            "optimizer",
            format!(
                "the parameter group pattern{} {} select{} no parameter; the module's trainable parameters are {}",
                if problems.len() == 1 { "" } else { "s" },
                problems.join(", "),
                if problems.len() == 1 { "s" } else { "" },
                list(&names)
            ),
        ))
    }

    /// The record stored in the optimizer's `config`: `None` without groups, so checkpoints of
    /// optimizers without groups are unchanged.
    pub(crate) fn record(&self) -> Option<GroupsRecord> {
        (!self.groups.is_empty()).then(|| GroupsRecord {
            base_lr: self.base_lr,
            groups: self.groups.clone(),
        })
    }

    /// The groups of a stored `record`, which must select parameters with the same patterns, in the same
    /// order, as these; the stored rates and weight decays replace these (as the optimizer's own
    /// configuration is replaced on resume).
    pub(crate) fn restored(&self, record: Option<&GroupsRecord>) -> Result<Self, String> {
        let stored: Vec<&str> = record
            .map(|r| r.groups.iter().map(|g| g.pattern()).collect())
            .unwrap_or_default();
        let configured: Vec<&str> = self.groups.iter().map(|g| g.pattern()).collect();
        if stored != configured {
            return Err(format!(
                "its parameter groups are {}, but the configured ones are {}: the stored moments were \
                 computed with the stored groups, so configure the same group patterns in the same order to \
                 resume (or start a new run from the weights)",
                list(&stored),
                list(&configured)
            ));
        }
        Ok(match record {
            Some(r) => Self {
                groups: r.groups.clone(),
                base_lr: r.base_lr,
            },
            None => self.clone(),
        })
    }
}

/// The weight decay of a parameter whose group says `group` (`None`: the optimizer's `own`), of the
/// optimizer's kind: decoupled when its own is, L2 otherwise.
pub(crate) fn weight_decay(own: Option<WeightDecay>, group: Option<f64>) -> Option<WeightDecay> {
    match (group, own) {
        (None, own) => own,
        (Some(0.0), _) => None,
        (Some(w), Some(WeightDecay::Decoupled(_))) => Some(WeightDecay::Decoupled(w)),
        (Some(w), _) => Some(WeightDecay::L2(w)),
    }
}

/// The groups as saved in a checkpoint's optimizer `config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupsRecord {
    base_lr: f64,
    groups: Vec<ParamGroup>,
}

/// Problems with a stored `config`'s groups join the other problems of a state that does not fit.
pub(crate) fn push_group_problem(
    groups: &Groups,
    record: Option<&GroupsRecord>,
    problems: &mut Vec<String>,
) -> Option<Groups> {
    match groups.restored(record) {
        Ok(g) => Some(g),
        Err(e) => {
            problems.push(e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_runs_single_characters_and_dots() {
        let cases = [
            ("*.bias", "0.bias", true),
            ("*.bias", "net.3.bias", true),
            ("*.bias", "0.weight", false),
            ("*.bias", "bias", false),
            ("net.0.weight", "net.0.weight", true),
            ("net.0.weight", "net.0.weights", false),
            ("net.?.*", "net.1.scale", true),
            ("net.?.*", "net.12.scale", false),
            ("*norm*", "encoder.norm1.scale", true),
            ("*", "", true),
            ("a*b*c", "a.x.b.y.c", true),
            ("a*b*c", "a.x.b.y.d", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                ParamGroup::new(pattern).matches(name),
                expected,
                "`{pattern}` on `{name}`"
            );
        }
    }

    #[test]
    fn first_matching_group_wins_and_follows_the_factor() {
        let groups = Groups {
            groups: vec![
                ParamGroup::new("0.*").lr(0.5),
                ParamGroup::new("*.bias").lr(2.0).weight_decay(0.0),
            ],
            base_lr: 1.0,
        };
        let at = |name| groups.resolve(name, 0.1);
        assert_eq!(at("0.bias").lr, 0.05);
        assert_eq!(at("0.bias").weight_decay, None);
        assert_eq!(at("2.bias").lr, 0.2);
        assert_eq!(at("2.bias").weight_decay, Some(0.0));
        assert_eq!(at("2.weight").lr, 0.1);
    }
}

#[cfg(test)]
mod optimizer_tests {
    use dfdx::prelude::*;

    use super::ParamGroup;
    use crate::optim::named::test_util::{batches, bits, moved, through_bytes, train, Mlp};
    use crate::optim::{Adam, LrScheduler, Optimizer, Sgd, StepLr};

    fn sgd(weight_decay: Option<WeightDecay>) -> Sgd<Cpu> {
        Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: Some(Momentum::Classic(0.9)),
            weight_decay,
        })
    }

    #[test]
    fn a_group_with_lr_zero_leaves_its_parameters_unchanged_while_others_move() {
        let dev = Cpu::seed_from_u64(5);
        let data = batches(&dev, 3);
        let model = dev.build_module::<Mlp, f32>();
        let before = bits(&model);

        let mut adam_model = model.clone();
        let mut adam = Adam::adamw(1e-2, 0.1).group(ParamGroup::new("0.*").lr(0.0));
        train(&mut adam_model, &mut adam, &data);
        assert_eq!(moved(&before, &bits(&adam_model)), ["2.bias", "2.weight"]);

        let mut sgd_model = model.clone();
        let mut sgd = sgd(Some(WeightDecay::L2(0.1))).group(ParamGroup::new("2.weight").lr(0.0));
        train(&mut sgd_model, &mut sgd, &data);
        assert_eq!(
            moved(&before, &bits(&sgd_model)),
            ["0.bias", "0.weight", "2.bias"]
        );
    }

    #[test]
    fn weight_decay_applies_only_where_its_group_says() {
        // With zero gradients only the weight decay moves a parameter: p * (1 - lr * wd) for both kinds.
        let dev = Cpu::seed_from_u64(9);
        let model = dev.build_module::<Mlp, f32>();
        let before = bits(&model);

        let mut adamw_model = model.clone();
        let mut adamw = Adam::adamw(0.1, 0.5).group(ParamGroup::new("*.bias").weight_decay(0.0));
        let mut grads = adamw_model.alloc_grads();
        adamw.step(&mut adamw_model, &mut grads).unwrap();
        assert_eq!(
            moved(&before, &bits(&adamw_model)),
            ["0.weight", "2.weight"]
        );
        let w0 = model.0.weight.as_vec()[0];
        assert_eq!(adamw_model.0.weight.as_vec()[0], w0 * (1.0 - 0.05));

        // SGD without weight decay of its own: the group adds L2 decay to its parameters only.
        let mut sgd_model = model.clone();
        let mut sgd = sgd(None).group(ParamGroup::new("0.weight").weight_decay(0.5));
        let mut grads = sgd_model.alloc_grads();
        sgd.step(&mut sgd_model, &mut grads).unwrap();
        assert_eq!(moved(&before, &bits(&sgd_model)), ["0.weight"]);
        assert_eq!(sgd_model.0.weight.as_vec()[0], w0 - 0.1 * (0.5 * w0));
    }

    #[test]
    fn a_scheduler_scales_every_group_and_keeps_their_ratios() {
        let mut adam: Adam<Cpu> = Adam::adamw(1e-2, 0.0)
            .group(ParamGroup::new("0.*").lr(1e-3))
            .group(ParamGroup::new("*.bias").weight_decay(0.0));
        let mut sched = StepLr::new(1, 0.5);
        let lr = sched.start(adam.lr());
        adam.set_lr(lr);
        for _ in 0..2 {
            let lr = sched.step();
            adam.set_lr(lr);
        }
        assert_eq!(adam.lr(), 1e-2 * 0.25);
        assert_eq!(adam.lr_of("0.weight"), 1e-3 * 0.25);
        assert_eq!(adam.lr_of("2.bias"), 1e-2 * 0.25);
        assert!((adam.lr_of("0.bias") / adam.lr_of("2.weight") - 0.1).abs() < 1e-12);
    }

    #[test]
    fn groups_round_trip_through_a_checkpoint_and_continue_bit_for_bit() {
        let dev = Cpu::seed_from_u64(13);
        let data = batches(&dev, 6);
        let mut model = dev.build_module::<Mlp, f32>();
        let groups = || {
            [
                ParamGroup::new("0.*").lr(1e-3),
                ParamGroup::new("*.bias").weight_decay(0.0),
            ]
        };
        let mut adam = groups()
            .into_iter()
            .fold(Adam::adamw(1e-2, 0.1), Adam::group);
        train(&mut model, &mut adam, &data[..3]);
        adam.set_lr(5e-3);

        let mut state = adam.state_dict().unwrap();
        let mut bytes = Vec::new();
        ciborium::into_writer(&state.config, &mut bytes).unwrap();
        state.config = ciborium::from_reader(bytes.as_slice()).unwrap();
        let state = through_bytes(&state);

        // Same patterns, other values: the stored values win, as the optimizer's own configuration does.
        let mut resumed_model = model.clone();
        let mut resumed = Adam::adamw(1.0, 0.0)
            .group(ParamGroup::new("0.*").lr(0.5))
            .group(ParamGroup::new("*.bias"));
        resumed.load_state_dict(&resumed_model, &state).unwrap();
        assert_eq!(resumed.groups(), adam.groups());
        assert_eq!(resumed.lr_of("0.weight"), 5e-4);

        train(&mut model, &mut adam, &data[3..]);
        train(&mut resumed_model, &mut resumed, &data[3..]);
        assert_eq!(bits(&model), bits(&resumed_model));
        assert_eq!(adam.state_dict().unwrap(), resumed.state_dict().unwrap());

        let mut sgd_model = dev.build_module::<Mlp, f32>();
        let mut original = sgd(None).group(ParamGroup::new("2.*").weight_decay(0.2));
        train(&mut sgd_model, &mut original, &data[..2]);
        let mut fresh = sgd(None).group(ParamGroup::new("2.*"));
        fresh
            .load_state_dict(&sgd_model, &original.state_dict().unwrap())
            .unwrap();
        assert_eq!(fresh.groups(), original.groups());
    }

    #[test]
    fn without_groups_the_saved_configuration_is_as_before() {
        let keys = |config: &ciborium::Value| -> Vec<String> {
            config
                .as_map()
                .unwrap()
                .iter()
                .map(|(k, _)| k.as_text().unwrap().to_string())
                .collect()
        };
        let adam = Adam::<Cpu>::adamw(1e-3, 0.1);
        let config = adam.state_dict().unwrap().config;
        assert_eq!(keys(&config), ["lr", "betas", "eps", "weight_decay"]);
        let grouped = adam.group(ParamGroup::new("*.bias").weight_decay(0.0));
        let config = grouped.state_dict().unwrap().config;
        assert_eq!(
            keys(&config),
            ["lr", "betas", "eps", "weight_decay", "param_groups"]
        );
    }

    #[test]
    fn resuming_with_other_group_patterns_is_refused() {
        let dev = Cpu::seed_from_u64(1);
        let mut model = dev.build_module::<Mlp, f32>();
        let mut adam = Adam::adamw(1e-2, 0.1).group(ParamGroup::new("*.bias").weight_decay(0.0));
        train(&mut model, &mut adam, &batches(&dev, 1));
        let state = adam.state_dict().unwrap();

        let mut other = Adam::adamw(1e-2, 0.1);
        let err = other.load_state_dict(&model, &state).unwrap_err();
        assert_eq!(
            err.0,
            "the `adamw` optimizer state does not fit the module (1 problem): its parameter groups are \
             `*.bias`, but the configured ones are none: the stored moments were computed with the stored \
             groups, so configure the same group patterns in the same order to resume (or start a new run \
             from the weights)"
        );
        assert_eq!(other.steps(), 0);

        let mut sgd_model = dev.build_module::<Mlp, f32>();
        let mut plain = sgd(None);
        train(&mut sgd_model, &mut plain, &batches(&dev, 1));
        let err = sgd(None)
            .group(ParamGroup::new("0.*"))
            .load_state_dict(&sgd_model, &plain.state_dict().unwrap())
            .unwrap_err();
        assert!(
            err.0
                .contains("its parameter groups are none, but the configured ones are `0.*`"),
            "{}",
            err.0
        );
    }

    #[test]
    fn a_pattern_that_matches_no_parameter_is_an_error_naming_it_and_the_parameters() {
        let dev = Cpu::default();
        let model = dev.build_module::<Mlp, f32>();
        let adam = Adam::adamw(1e-3, 0.1)
            .group(ParamGroup::new("*.bias"))
            .group(ParamGroup::new("0.weights").lr(0.0));
        let err = Optimizer::<_, Cpu>::check_params(&adam, &model).unwrap_err();
        assert!(
            matches!(&err, crate::Error::Config { settings, .. } if settings == &["optimizer"]),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the parameter group pattern `0.weights` (did you mean `0.weight`?) selects no parameter; the \
             module's trainable parameters are `0.bias`, `0.weight`, `2.bias`, `2.weight`"
        );

        let sgd = sgd(None)
            .group(ParamGroup::new("encoder.*"))
            .group(ParamGroup::new("*.norm"));
        let err = Optimizer::<_, Cpu>::check_params(&sgd, &model).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the parameter group patterns `encoder.*`, `*.norm` select no parameter; the module's trainable \
             parameters are `0.bias`, `0.weight`, `2.bias`, `2.weight`"
        );
        assert!(Optimizer::<_, Cpu>::check_params(&sgd_plain(), &model).is_ok());
    }

    fn sgd_plain() -> Sgd<Cpu> {
        sgd(None).group(ParamGroup::new("?.bias"))
    }
}

#[cfg(test)]
mod fit_tests {
    use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
    use dfdx::prelude::*;

    use super::ParamGroup;
    use crate::data::{TensorBatch, TensorData};
    use crate::metrics::{MetricSpec, StepLog};
    use crate::module::{Built, LightningModule, Loss, ModuleState};
    use crate::optim::{Optimizers, Sgd};
    use crate::trainer::Trainer;
    use crate::{Backend, Error, Result};

    struct LitLinear<D: Backend> {
        net: Built<Linear<2, 1>, D>,
    }

    impl<D: Backend> TensorCollection<f32, D> for LitLinear<D> {
        type To<E2: Dtype, D2: Device<E2>> = ();
        fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(v: &mut V) -> Result<Option<()>, V::Err> {
            v.visit_fields(Self::module("net", |s| &s.net, |s| &mut s.net), |_| ())
        }
    }

    impl<D: Backend> ModuleState<D> for LitLinear<D> {
        type Hparams = ();
        fn hparams(&self) -> &() {
            &()
        }
        fn from_hparams((): (), d: &D) -> Result<Self> {
            Ok(Self {
                net: d.build_module::<Linear<2, 1>, f32>(),
            })
        }
    }

    type Batch<D> = TensorBatch<Rank1<2>, Rank1<1>, D>;

    impl<D: Backend> LightningModule<D> for LitLinear<D> {
        type Batch = Batch<D>;
        type Prediction = ();
        const METRICS: &'static [MetricSpec] = &[];
        fn training_step(
            &mut self,
            b: Batch<D>,
            g: Gradients<f32, D>,
            _: &mut StepLog,
        ) -> Result<Loss<D>> {
            Ok(mse_loss(self.net.forward_mut(b.x.traced(g)), b.y))
        }
        fn configure_optimizers(&self) -> Optimizers<Self, D> {
            Optimizers::new(
                Sgd::new(SgdConfig::default()).group(ParamGroup::new("net.0.*").lr(0.0)),
            )
        }
    }

    #[test]
    fn fit_fails_at_start_on_a_pattern_that_selects_no_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Cpu::default();
        let data = TensorData::<Rank1<2>, Rank1<1>>::new(vec![0.5; 2 * 4], vec![1.0; 4]).unwrap();
        let mut trainer = Trainer::builder()
            .max_epochs(1)
            .default_root_dir(dir.path())
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .build()
            .unwrap();
        let module = LitLinear::from_hparams((), &dev).unwrap();
        let err = trainer
            .fit(
                module,
                &mut data.loader(2, false, &dev).unwrap(),
                None,
                None,
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { settings, .. } if settings == &["optimizer"]),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the parameter group pattern `net.0.*` selects no parameter; the module's trainable parameters \
             are `net.bias`, `net.weight`"
        );
        assert_eq!(trainer.global_step(), 0);
    }
}
