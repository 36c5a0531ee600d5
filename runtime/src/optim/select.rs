//! The parameters an optimizer updates: all of them, or those whose names match its patterns
//! (PyTorch's `Adam(self.generator.parameters())`).

use super::named::list;
use super::ParamGroup;
use crate::{Error, Result};

/// An optimizer's parameter selection: empty selects every trainable parameter.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Selection {
    patterns: Vec<ParamGroup>,
}

impl Selection {
    pub(crate) fn add(&mut self, pattern: &str) {
        self.patterns.push(ParamGroup::new(pattern));
    }

    /// The patterns, in the order they were given.
    pub(crate) fn patterns(&self) -> Vec<&str> {
        self.patterns.iter().map(ParamGroup::pattern).collect()
    }

    /// Whether the optimizer updates parameter `name`.
    pub(crate) fn selects(&self, name: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(name))
    }

    /// Fails when a pattern matches none of `names`, naming the pattern and the parameters.
    pub(crate) fn check<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let names: Vec<&str> = names.into_iter().collect();
        let problems: Vec<String> = self
            .patterns
            .iter()
            .filter(|p| !names.iter().any(|n| p.matches(n)))
            .map(|p| {
                let hint = fulgur_rules::suggest::did_you_mean(p.pattern(), names.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                format!("`{}`{hint}", p.pattern())
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::config(
            "optimizer",
            format!(
                "the optimizer's parameter pattern{} {} (`params`) select{} no parameter; the module's \
                 trainable parameters are {}",
                if problems.len() == 1 { "" } else { "s" },
                problems.join(", "),
                if problems.len() == 1 { "s" } else { "" },
                list(&names)
            ),
        ))
    }

    /// The record stored in the optimizer's `config`: `None` when every parameter is selected, so that
    /// such checkpoints are unchanged.
    pub(crate) fn record(&self) -> Option<Vec<String>> {
        (!self.patterns.is_empty()).then(|| {
            self.patterns
                .iter()
                .map(|p| p.pattern().to_string())
                .collect()
        })
    }

    /// Fails unless a stored `record` selects with the same patterns, in the same order: the stored
    /// state belongs to the parameters the stored patterns select.
    pub(crate) fn check_restored(&self, record: Option<&[String]>) -> Result<(), String> {
        let stored: Vec<&str> = record
            .map(|r| r.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let configured = self.patterns();
        if stored == configured {
            return Ok(());
        }
        let describe = |p: &[&str]| match p {
            [] => "every parameter".to_string(),
            p => list(p),
        };
        Err(format!(
            "it updated {}, but the configured optimizer updates {}: configure the same `params` patterns \
             in the same order to resume",
            describe(&stored),
            describe(&configured)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_selection_selects_everything_and_patterns_select_by_name() {
        let mut s = Selection::default();
        assert!(s.selects("anything"));
        s.add("gen.*");
        s.add("head.bias");
        assert!(s.selects("gen.0.weight") && s.selects("head.bias"));
        assert!(!s.selects("disc.0.weight") && !s.selects("head.weight"));
        assert_eq!(s.record(), Some(vec!["gen.*".into(), "head.bias".into()]));
        assert!(s
            .check_restored(Some(&["gen.*".into(), "head.bias".into()]))
            .is_ok());
        let err = s.check_restored(None).unwrap_err();
        assert!(
            err.starts_with("it updated every parameter, but the configured optimizer updates `gen.*`, `head.bias`"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod optimizer_tests {
    use dfdx::prelude::*;

    use crate::optim::named::test_util::{batches, bits, moved, train, Mlp};
    use crate::optim::{Adam, Optimizer, Sgd};

    #[test]
    fn unselected_parameters_keep_their_values_and_have_no_state() {
        let dev = Cpu::seed_from_u64(4);
        let data = batches(&dev, 2);
        let model = dev.build_module::<Mlp, f32>();
        let before = bits(&model);

        let mut adam_model = model.clone();
        let mut adam = Adam::adamw(1e-2, 0.1).params("2.*");
        train(&mut adam_model, &mut adam, &data);
        assert_eq!(moved(&before, &bits(&adam_model)), ["2.bias", "2.weight"]);
        let state = adam.state_dict().unwrap();
        assert!(state.params.keys().eq(["2.bias", "2.weight"]));

        let mut sgd_model = model.clone();
        let mut sgd = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: Some(Momentum::Classic(0.9)),
            weight_decay: Some(WeightDecay::L2(0.1)),
        })
        .params("0.weight")
        .params("2.bias");
        train(&mut sgd_model, &mut sgd, &data);
        assert_eq!(moved(&before, &bits(&sgd_model)), ["0.weight", "2.bias"]);
        assert_eq!(sgd.selected_params(), ["0.weight", "2.bias"]);

        // Resuming with other patterns, or with state for a parameter now unselected, is refused.
        let err = Adam::adamw(1e-2, 0.1)
            .params("0.*")
            .load_state_dict(&model, &state)
            .unwrap_err();
        assert!(
            err.0
                .contains("it updated `2.*`, but the configured optimizer updates `0.*`")
                && err.0.contains(
                    "`2.bias` has state, but none of the optimizer's `params` patterns selects it"
                ),
            "{}",
            err.0
        );
        let err =
            Optimizer::<_, Cpu>::check_params(&Adam::<Cpu>::adamw(1e-2, 0.1).params("3.*"), &model)
                .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "the optimizer's parameter pattern `3.*` (`params`) selects no parameter"
            ),
            "{err}"
        );
    }
}
