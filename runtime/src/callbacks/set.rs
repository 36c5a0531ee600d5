//! A run's callbacks: the user's and the module's, the defaults the trainer adds, in the order their
//! hooks run (checkpoint callbacks last, as Lightning orders them).

use std::collections::{BTreeMap, BTreeSet};

use ciborium::Value;

use super::{
    Callback, CallbackContext, CheckpointPaths, CheckpointSink, ModelCheckpoint, ModelSummary,
    ProgressBar,
};
use crate::state::TrainerState;
use crate::strategy::Strategy;
use crate::{Error, Result};

/// Which default callbacks the trainer's settings ask for (`enable_progress_bar`,
/// `enable_model_summary`, `enable_checkpointing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Defaults {
    pub progress_bar: bool,
    pub model_summary: bool,
    pub checkpointing: bool,
}

/// The callbacks of a trainer, in the order their hooks run.
#[derive(Default)]
pub(crate) struct CallbackSet {
    callbacks: Vec<Box<dyn Callback>>,
    /// The state keys of the callbacks the module brought at the last install.
    module_keys: BTreeSet<String>,
    /// Which callbacks the last install added as defaults.
    default_checkpoint: bool,
    default_progress_bar: bool,
    default_model_summary: bool,
}

impl CallbackSet {
    /// The user's callbacks, in the order given; [`install`](Self::install) completes and orders them.
    pub(crate) fn new(callbacks: Vec<Box<dyn Callback>>) -> Self {
        Self {
            callbacks,
            ..Self::default()
        }
    }

    /// Installs the module's callbacks next to the user's, replacing those of an earlier install and any
    /// user callback with the same state key; adds the default progress bar, model summary and
    /// checkpoint callback where `defaults` asks for one and none is given; checkpoint callbacks move to
    /// the end (Lightning's order). A callback that `defaults` turns off, or two with one state key, is
    /// an error.
    pub(crate) fn install(
        &mut self,
        from_module: Vec<Box<dyn Callback>>,
        defaults: Defaults,
    ) -> Result<()> {
        let stale = std::mem::take(&mut self.module_keys);
        let mut all: Vec<Box<dyn Callback>> = std::mem::take(&mut self.callbacks);
        all.retain(|c| !stale.contains(&c.state_key()));
        // The defaults of an earlier install go; they are added again below if still wanted.
        if std::mem::take(&mut self.default_progress_bar) {
            all.retain(|c| !c.is_progress_bar());
        }
        if std::mem::take(&mut self.default_model_summary) {
            all.retain(|c| !c.as_any().is::<ModelSummary>());
        }
        // Lightning's default: a plain `ModelCheckpoint()` when checkpointing is on and none is given.
        // The default of an earlier install stays, with its state, so that a further `fit` continues its
        // top-k; it goes when the module brings a checkpoint callback.
        if self.default_checkpoint && from_module.iter().any(|c| c.is_checkpoint()) {
            if let Ok(config) = ModelCheckpoint::builder().config() {
                let key = config.state_key();
                all.retain(|c| c.state_key() != key);
            }
            self.default_checkpoint = false;
        }
        // A module's callback replaces the trainer's with its state key (Lightning's
        // `_reorder_callbacks`); two of the module's own with one key stay, for the duplicate check.
        let given = all.len();
        for cb in from_module {
            let key = cb.state_key();
            if all[..given].iter().any(|c| c.state_key() == key) {
                crate::warn(&format!("the module's callback `{key}` replaces the trainer's callback with the same state key"));
            }
            self.module_keys.insert(key);
            all.push(cb);
        }
        let mut index = 0;
        all.retain(|c| {
            index += 1;
            index > given || !self.module_keys.contains(&c.state_key())
        });
        if defaults.progress_bar && !all.iter().any(|c| c.is_progress_bar()) {
            all.push(Box::new(ProgressBar::new()));
            self.default_progress_bar = true;
        }
        if defaults.model_summary && !all.iter().any(|c| c.as_any().is::<ModelSummary>()) {
            all.push(Box::new(ModelSummary::new()));
            self.default_model_summary = true;
        }
        if defaults.checkpointing && !all.iter().any(|c| c.is_checkpoint()) {
            all.push(Box::new(ModelCheckpoint::builder().build()?));
            self.default_checkpoint = true;
        }
        let mut keys = BTreeSet::new();
        let duplicate = all
            .iter()
            .map(|c| c.state_key())
            .find(|k| !keys.insert(k.clone()));
        let checkpointing_off = !defaults.checkpointing && all.iter().any(|c| c.is_checkpoint());
        let progress_bar_off = !defaults.progress_bar && all.iter().any(|c| c.is_progress_bar());
        let (ckpt, plain): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| c.is_checkpoint());
        self.callbacks = plain.into_iter().chain(ckpt).collect();
        if checkpointing_off {
            return Err(Error::config(
                "enable_checkpointing",
                "Trainer was configured with `enable_checkpointing = false` but found a checkpoint callback in the callbacks list",
            ));
        }
        if progress_bar_off {
            return Err(Error::config(
                "enable_progress_bar",
                "Trainer was configured with `enable_progress_bar = false` but found a progress bar callback in the callbacks list",
            ));
        }
        if let Some(key) = duplicate {
            return Err(Error::config("state_key", format!(
                "two callbacks have the same state key `{key}`: give one of them different settings or a distinct `state_key`"
            )));
        }
        Ok(())
    }

    /// The callbacks in the order they run.
    pub(crate) fn as_slice(&self) -> &[Box<dyn Callback>] {
        &self.callbacks
    }

    /// Every callback of type `C`, in order.
    pub(crate) fn all_of<C: Callback>(&self) -> impl Iterator<Item = &C> {
        // `as_any` through `dyn Callback`: the callback itself, never the box around it.
        self.callbacks
            .iter()
            .filter_map(|c| c.as_any().downcast_ref::<C>())
    }

    /// The first callback of type `C`.
    pub(crate) fn first_of<C: Callback>(&self) -> Option<&C> {
        self.all_of::<C>().next()
    }

    /// The checkpoint callbacks, in order, each with its state key and the files it knows of (none for
    /// one that does not say).
    pub(crate) fn checkpoint_paths(&self) -> Vec<(String, CheckpointPaths)> {
        self.callbacks
            .iter()
            .filter(|c| c.is_checkpoint())
            .map(|c| (c.state_key(), c.checkpoint_paths().unwrap_or_default()))
            .collect()
    }

    /// The states to store in a full checkpoint, by state key.
    pub(crate) fn state_dicts(&self) -> BTreeMap<String, Value> {
        self.callbacks
            .iter()
            .filter_map(|cb| Some((cb.state_key(), cb.state_dict()?)))
            .collect()
    }

    /// Restores each callback whose state key `states` holds; returns the keys no callback took.
    pub(crate) fn load_state_dicts<'s>(
        &mut self,
        states: &'s BTreeMap<String, Value>,
    ) -> Result<Vec<&'s String>> {
        let mut unmatched: Vec<&String> = states.keys().collect();
        for cb in &mut self.callbacks {
            let key = cb.state_key();
            if let Some(state) = states.get(&key) {
                cb.load_state_dict(state)?;
                unmatched.retain(|k| **k != key);
            }
        }
        Ok(unmatched)
    }

    /// Runs `hook` on the callbacks `filter` selects, in order, each with a context that sees `state`,
    /// saves through `sink` and reaches the other callbacks' states. Stops at the first error.
    pub(crate) fn run(
        &mut self,
        state: &TrainerState,
        sink: &dyn CheckpointSink,
        strategy: &dyn Strategy,
        filter: impl Fn(&dyn Callback) -> bool,
        mut hook: impl FnMut(&mut dyn Callback, &mut CallbackContext<'_>) -> Result<()>,
    ) -> Result<()> {
        for i in 0..self.callbacks.len() {
            let (before, rest) = self.callbacks.split_at_mut(i);
            let Some((current, after)) = rest.split_first_mut() else {
                break;
            };
            if !filter(&**current) {
                continue;
            }
            let mut ctx = CallbackContext {
                state,
                sink,
                others: [before, after],
                strategy,
            };
            hook(&mut **current, &mut ctx)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::callbacks::{AsAny, ParameterInfo};
    use crate::checkpoint::Checkpoint;
    use crate::strategy::SingleProcess;

    /// A callback that records its `on_train_start` calls in a shared log.
    struct Fake {
        key: &'static str,
        checkpoint: bool,
        progress_bar: bool,
        fails: bool,
        state: Option<Value>,
        paths: Option<CheckpointPaths>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Fake {
        fn plain(key: &'static str) -> Self {
            Self {
                key,
                checkpoint: false,
                progress_bar: false,
                fails: false,
                state: None,
                paths: None,
                log: Arc::default(),
            }
        }

        fn checkpoint(key: &'static str) -> Self {
            Self {
                checkpoint: true,
                ..Self::plain(key)
            }
        }

        fn logging_to(mut self, log: &Arc<Mutex<Vec<String>>>) -> Self {
            self.log = Arc::clone(log);
            self
        }
    }

    impl Callback for Fake {
        fn state_key(&self) -> String {
            self.key.to_string()
        }

        fn is_checkpoint(&self) -> bool {
            self.checkpoint
        }

        fn is_progress_bar(&self) -> bool {
            self.progress_bar
        }

        fn on_train_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
            let saved = ctx.build_checkpoint(false, self)?;
            let states: Vec<&String> = saved.callbacks.keys().collect();
            self.log
                .lock()
                .unwrap()
                .push(format!("{} sees {states:?}", self.key));
            if self.fails {
                return Err(Error::user(format!("`{}` fails", self.key)));
            }
            Ok(())
        }

        fn state_dict(&self) -> Option<Value> {
            self.state.clone()
        }

        fn load_state_dict(&mut self, state: &Value) -> Result<()> {
            self.state = Some(state.clone());
            Ok(())
        }

        fn checkpoint_paths(&self) -> Option<CheckpointPaths> {
            self.paths.clone()
        }
    }

    /// Builds checkpoints that hold only the callback states, as the trainer's sink does without a module.
    struct FakeSink;

    impl CheckpointSink for FakeSink {
        fn checkpoint(
            &self,
            _weights_only: bool,
            callbacks: BTreeMap<String, Value>,
        ) -> Result<Checkpoint> {
            let mut ckpt = Checkpoint::new("Fake");
            ckpt.callbacks = callbacks;
            Ok(ckpt)
        }

        fn parameters(&self) -> Vec<ParameterInfo> {
            Vec::new()
        }
    }

    const NONE: Defaults = Defaults {
        progress_bar: false,
        model_summary: false,
        checkpointing: false,
    };
    const ALL: Defaults = Defaults {
        progress_bar: true,
        model_summary: true,
        checkpointing: true,
    };
    const CHECKPOINTING: Defaults = Defaults {
        checkpointing: true,
        ..NONE
    };

    fn set(callbacks: Vec<Fake>) -> CallbackSet {
        CallbackSet::new(
            callbacks
                .into_iter()
                .map(|c| Box::new(c) as Box<dyn Callback>)
                .collect(),
        )
    }

    fn keys(set: &CallbackSet) -> Vec<String> {
        set.as_slice().iter().map(|c| c.state_key()).collect()
    }

    fn run_train_start(
        set: &mut CallbackSet,
        filter: impl Fn(&dyn Callback) -> bool,
    ) -> Result<()> {
        set.run(
            &TrainerState::default(),
            &FakeSink,
            &SingleProcess,
            filter,
            |c, ctx| c.on_train_start(ctx),
        )
    }

    #[test]
    fn checkpoint_callbacks_run_last_each_group_in_the_order_given() {
        let mut s = set(vec![
            Fake::checkpoint("a"),
            Fake::plain("b"),
            Fake::checkpoint("c"),
            Fake::plain("d"),
        ]);
        s.install(Vec::new(), CHECKPOINTING).unwrap();
        assert_eq!(keys(&s), ["b", "d", "a", "c"]);
    }

    #[test]
    fn the_defaults_are_installed_where_none_is_given() {
        let mut s = set(vec![Fake::plain("mine")]);
        s.install(Vec::new(), ALL).unwrap();
        let all = s.as_slice();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].state_key(), "mine");
        assert!(all[1].as_any().is::<ProgressBar>());
        assert!(all[2].as_any().is::<ModelSummary>());
        assert!(all[3].as_any().is::<ModelCheckpoint>());

        let mut none = set(vec![Fake::plain("mine")]);
        none.install(Vec::new(), NONE).unwrap();
        assert_eq!(keys(&none), ["mine"]);
    }

    #[test]
    fn given_callbacks_replace_the_defaults() {
        let bar = Fake {
            progress_bar: true,
            ..Fake::plain("my bar")
        };
        let mut s = CallbackSet::new(vec![
            Box::new(Fake::checkpoint("my checkpoint")),
            Box::new(bar),
            Box::new(ModelSummary::new().max_depth(2)),
        ]);
        s.install(Vec::new(), ALL).unwrap();
        assert_eq!(s.as_slice().len(), 3);
        assert!(s.first_of::<ProgressBar>().is_none());
        assert!(s.first_of::<ModelCheckpoint>().is_none());
        assert_eq!(s.all_of::<ModelSummary>().count(), 1);
        assert_eq!(s.as_slice()[2].state_key(), "my checkpoint");
    }

    #[test]
    fn callbacks_the_settings_turn_off_are_refused() {
        let mut s = set(vec![Fake::checkpoint("c")]);
        let err = s.install(Vec::new(), NONE).unwrap_err().to_string();
        assert!(err.contains("`enable_checkpointing = false`"), "{err}");

        let bar = Fake {
            progress_bar: true,
            ..Fake::plain("bar")
        };
        let mut s = set(vec![bar]);
        let err = s.install(Vec::new(), NONE).unwrap_err().to_string();
        assert!(err.contains("`enable_progress_bar = false`"), "{err}");
    }

    #[test]
    fn two_callbacks_with_one_state_key_are_refused() {
        let mut s = set(vec![Fake::plain("twice"), Fake::plain("twice")]);
        let err = s.install(Vec::new(), NONE).unwrap_err().to_string();
        assert!(err.contains("state key `twice`"), "{err}");
    }

    #[test]
    fn the_module_callbacks_replace_same_keys_and_those_of_an_earlier_install() {
        let mut s = set(vec![Fake::plain("user"), Fake::plain("shared")]);
        s.install(
            vec![
                Box::new(Fake::plain("module 1")),
                Box::new(Fake::plain("shared")),
            ],
            NONE,
        )
        .unwrap();
        assert_eq!(keys(&s), ["user", "module 1", "shared"]);
        s.install(vec![Box::new(Fake::plain("module 2"))], NONE)
            .unwrap();
        assert_eq!(keys(&s), ["user", "module 2"]);
    }

    #[test]
    fn two_module_callbacks_with_one_state_key_are_refused_not_merged() {
        let mut s = set(vec![Fake::plain("shared")]);
        let err = s
            .install(
                vec![
                    Box::new(Fake::plain("shared")),
                    Box::new(Fake::plain("shared")),
                ],
                NONE,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("state key `shared`"), "{err}");
    }

    #[test]
    fn the_default_checkpoint_stays_across_installs_until_the_module_brings_one() {
        let mut s = set(Vec::new());
        s.install(Vec::new(), CHECKPOINTING).unwrap();
        let first: *const ModelCheckpoint = s.first_of::<ModelCheckpoint>().unwrap();
        s.install(Vec::new(), CHECKPOINTING).unwrap();
        let again: *const ModelCheckpoint = s.first_of::<ModelCheckpoint>().unwrap();
        assert_eq!(first, again, "the same callback, with its state");
        s.install(vec![Box::new(Fake::checkpoint("module's"))], CHECKPOINTING)
            .unwrap();
        assert_eq!(keys(&s), ["module's"]);
    }

    #[test]
    fn hooks_run_in_order_on_the_selected_callbacks_and_stop_at_an_error() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let with_state = |mut f: Fake| {
            f.state = Some(Value::from(f.key));
            f.logging_to(&log)
        };
        let mut s = set(vec![
            with_state(Fake::checkpoint("c")),
            with_state(Fake::plain("a")),
            Fake::plain("b").logging_to(&log),
        ]);
        s.install(Vec::new(), CHECKPOINTING).unwrap();

        run_train_start(&mut s, |_| true).unwrap();
        run_train_start(&mut s, |c| c.is_checkpoint()).unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                r#"a sees ["a", "c"]"#,
                r#"b sees ["a", "c"]"#,
                r#"c sees ["a", "c"]"#,
                r#"c sees ["a", "c"]"#,
            ]
        );

        log.lock().unwrap().clear();
        let failing = Fake {
            fails: true,
            ..Fake::plain("fails")
        };
        let mut s = set(vec![
            Fake::plain("first").logging_to(&log),
            failing.logging_to(&log),
            Fake::plain("never").logging_to(&log),
        ]);
        s.install(Vec::new(), NONE).unwrap();
        let err = run_train_start(&mut s, |_| true).unwrap_err().to_string();
        assert!(err.contains("`fails` fails"), "{err}");
        assert_eq!(*log.lock().unwrap(), ["first sees []", "fails sees []"]);
    }

    #[test]
    fn checkpoint_paths_come_from_the_checkpoint_callbacks_in_order() {
        let paths = CheckpointPaths {
            best: vec![PathBuf::from("best.ckpt")],
            last: vec![PathBuf::from("last.ckpt")],
            others: vec![PathBuf::from("epoch=0.ckpt")],
        };
        let mut s = set(vec![
            Fake {
                paths: Some(paths.clone()),
                ..Fake::checkpoint("a")
            },
            Fake {
                paths: Some(CheckpointPaths::default()),
                ..Fake::plain("not a checkpoint callback")
            },
            Fake::checkpoint("says nothing"),
        ]);
        s.install(Vec::new(), CHECKPOINTING).unwrap();
        assert_eq!(
            s.checkpoint_paths(),
            [
                ("a".to_string(), paths),
                ("says nothing".to_string(), CheckpointPaths::default())
            ]
        );
    }

    #[test]
    fn states_are_saved_and_restored_by_state_key() {
        let mut s = set(vec![
            Fake {
                state: Some(Value::from(1)),
                ..Fake::plain("a")
            },
            Fake::plain("b"),
        ]);
        s.install(Vec::new(), NONE).unwrap();
        assert_eq!(
            s.state_dicts(),
            BTreeMap::from([("a".to_string(), Value::from(1))])
        );
        let stored = BTreeMap::from([
            ("b".to_string(), Value::from(2)),
            ("gone".to_string(), Value::from(3)),
        ]);
        assert_eq!(s.load_state_dicts(&stored).unwrap(), ["gone"]);
        assert_eq!(
            s.state_dicts(),
            BTreeMap::from([
                ("a".to_string(), Value::from(1)),
                ("b".to_string(), Value::from(2))
            ])
        );
    }

    #[test]
    fn a_callback_without_as_any_is_found_by_its_type() {
        struct Quiet(u32);
        impl Callback for Quiet {}

        let boxed: Box<dyn Callback> = Box::new(Quiet(7));
        assert!(boxed.as_any().is::<Quiet>());
        // What the set never does: `AsAny` called on the box itself upcasts the box.
        assert!(AsAny::as_any_ref(&boxed).is::<Box<dyn Callback>>());

        let mut s = CallbackSet::new(vec![Box::new(Fake::plain("other")), boxed]);
        s.install(Vec::new(), NONE).unwrap();
        assert_eq!(s.first_of::<Quiet>().map(|q| q.0), Some(7));
        assert_eq!(s.all_of::<Fake>().count(), 1);
        assert!(s.first_of::<ModelCheckpoint>().is_none());
    }
}
