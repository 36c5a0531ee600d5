//! The decisions of `ModelCheckpoint`, as pure functions: given the book (what has been saved and how it
//! scored), the metrics and a trigger, which files are written, linked and deleted (B.5, B.8–B.10, G.3,
//! G.4). A file-existence oracle stands in for the file system, so all of it is tested without one.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{CheckpointConfig, SaveLast};
use super::filename::FilenameTemplate;
use super::names::OwnNames;
use crate::metrics::MetricValue;
use crate::{Error, Result};

/// What the callback has saved and how it scored: Lightning's public attributes plus the private fields
/// that steer decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// Path → score of the kept top-k files, in insertion order.
    pub best_k_models: Vec<(PathBuf, f64)>,
    /// The worst kept file once the top-k is full.
    pub kth_best_model_path: Option<PathBuf>,
    /// Its score (±inf until the top-k is full).
    pub kth_value: f64,
    /// The best file so far; the latest file when nothing is monitored.
    pub best_model_path: Option<PathBuf>,
    /// Its score; `None` when nothing is monitored.
    pub best_model_score: Option<f64>,
    /// The last score accepted into the top-k, after NaN mapping.
    pub current_score: Option<f64>,
    /// The current `last` file.
    pub last_model_path: Option<PathBuf>,
    /// The global step of the latest save event (not persisted: a new run starts at 0).
    #[serde(skip)]
    pub last_global_step_saved: u64,
    /// The latest real (not linked) file written (not persisted).
    #[serde(skip)]
    pub last_checkpoint_saved: Option<PathBuf>,
    /// The global step the `last` file holds (not persisted).
    #[serde(skip)]
    pub last_file_step: Option<u64>,
}

impl Book {
    /// An empty book for `cfg`.
    pub fn new(cfg: &CheckpointConfig) -> Self {
        Self {
            best_k_models: Vec::new(),
            kth_best_model_path: None,
            kth_value: cfg.mode.worst(),
            best_model_path: None,
            best_model_score: None,
            current_score: None,
            last_model_path: None,
            last_global_step_saved: 0,
            last_checkpoint_saved: None,
            last_file_step: None,
        }
    }
}

/// One file-system step of a decision, performed in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write a full (or weights-only) checkpoint holding `book` as the callback's state.
    Save {
        /// The file.
        path: PathBuf,
        /// The callback's state at the moment of writing (Lightning updates it before writing).
        book: Box<Book>,
    },
    /// Point `link` at `target` with a relative symlink.
    Link {
        /// The existing file.
        target: PathBuf,
        /// The link to create or replace.
        link: PathBuf,
    },
    /// Delete a file that is no longer kept.
    Delete(PathBuf),
}

/// Everything names depend on: settings, directory, metrics and which files exist.
pub struct Namer<'a> {
    /// The settings.
    pub cfg: &'a CheckpointConfig,
    /// The resolved directory.
    pub dirpath: &'a Path,
    /// Monitor candidates: `callback_metrics` plus `epoch` and `step`.
    pub cands: &'a BTreeMap<String, MetricValue>,
    /// Whether a file exists (rank 0's answer, on every rank).
    pub exists: &'a dyn Fn(&Path) -> bool,
}

impl Namer<'_> {
    /// `format_checkpoint_name` (B.4): the template rendered, a version suffix, the extension.
    pub fn name(&self, template: &FilenameTemplate, version: Option<u64>) -> Result<PathBuf> {
        let cfg = self.cfg;
        let mut name = template
            .render(
                |k| self.cands.get(k).copied(),
                cfg.auto_insert_metric_name,
                &cfg.equals_char,
            )
            .map_err(|e| Error::config("filename", e.to_string()))?;
        if let Some(v) = version {
            name = format!("{name}{}v{v}", cfg.join_char);
        }
        name.push_str(&cfg.file_extension);
        Ok(self.dirpath.join(name))
    }

    /// The name with a version counter (B.5): the first of `name`, `name-v1`, … that does not exist or is
    /// `reusable`, the file about to be replaced.
    pub fn versioned(
        &self,
        template: &FilenameTemplate,
        reusable: Option<&Path>,
    ) -> Result<PathBuf> {
        let mut path = self.name(template, None)?;
        if self.cfg.enable_version_counter {
            let mut v = self.cfg.starting_version;
            while (self.exists)(&path) && Some(path.as_path()) != reusable {
                path = self.name(template, Some(v))?;
                v += 1;
            }
        }
        Ok(path)
    }

    /// Whether `path` is a file this callback's templates can name inside its directory (G.9).
    pub fn owns(&self, path: &Path) -> bool {
        OwnNames::new(self.cfg).contains(path, self.dirpath)
    }
}

/// `should_remove` (B.10, G.9): a different file, not the file to `keep`, and one of the callback's own
/// files: a name its templates can produce inside `dirpath`.
pub fn should_remove(
    previous: &Path,
    current: &Path,
    keep: Option<&Path>,
    owns: impl Fn(&Path) -> bool,
) -> bool {
    previous != current && keep != Some(previous) && owns(previous)
}

/// The order in which a trigger's actions are performed. With a link, every deletion comes after it: the
/// link names its new target before the file it named may go, so `last` never dangles, whenever the run
/// stops (G.3). Otherwise each deletion stays right after the write that replaces it, so a later write
/// that fails (a full disk) still leaves the space it freed.
pub fn in_safe_order(mut actions: Vec<Action>) -> Vec<Action> {
    if actions.iter().any(|a| matches!(a, Action::Link { .. })) {
        actions.sort_by_key(|a| matches!(a, Action::Delete(_)));
    }
    actions
}

/// The place of the decisions: the book plus what a trigger needs to know.
pub struct Decide<'a> {
    /// The book, updated as decisions are made.
    pub book: &'a mut Book,
    /// Names.
    pub namer: &'a Namer<'a>,
    /// The global step of this trigger.
    pub global_step: u64,
    /// A file never deleted nor overwritten: the checkpoint this run resumed from, unless a `"last"` or
    /// `"best"` recovery picked one of the callback's own files (B.10).
    pub keep: Option<&'a Path>,
    /// Whether this trigger is the end of `fit`, after which `last` must hold the final state (G.3).
    pub end_of_fit: bool,
}

impl Decide<'_> {
    fn cfg(&self) -> &CheckpointConfig {
        self.namer.cfg
    }

    fn save(&mut self, path: PathBuf, actions: &mut Vec<Action>) {
        self.book.last_global_step_saved = self.global_step;
        self.book.last_checkpoint_saved = Some(path.clone());
        actions.push(Action::Save {
            path,
            book: Box::new(self.book.clone()),
        });
    }

    fn delete_if_allowed(&self, previous: PathBuf, current: &Path, actions: &mut Vec<Action>) {
        if should_remove(&previous, current, self.keep, |p| self.namer.owns(p)) {
            actions.push(Action::Delete(previous));
        }
    }

    /// `path` as a name the version counter may reuse: never the file to keep.
    fn reusable<'p>(&self, path: Option<&'p Path>) -> Option<&'p Path> {
        path.filter(|p| Some(*p) != self.keep)
    }

    /// Whether `current` enters the top-k (B.8 `improves`); `agree` makes the decision common to all ranks
    /// once the top-k is full.
    pub fn improves(
        &self,
        current: f64,
        agree: &mut dyn FnMut(bool) -> Result<bool>,
    ) -> Result<bool> {
        let k = self.cfg().save_top_k;
        if k == -1 || (self.book.best_k_models.len() as i64) < k {
            return Ok(true);
        }
        let kth = self.book.kth_value;
        agree(self.cfg().mode.better(current, kth))
    }

    /// `update_best_and_save` (B.8): the top-k accepts `current`; the evicted file goes after the new one
    /// is written.
    pub fn update_best_and_save(&mut self, current: f64) -> Result<Vec<Action>> {
        let cfg: &CheckpointConfig = self.namer.cfg;
        let mode = cfg.mode;
        let k = if cfg.save_top_k == -1 {
            self.book.best_k_models.len() + 1
        } else {
            cfg.save_top_k as usize
        };
        let mut evicted = None;
        if self.book.best_k_models.len() == k && k > 0 {
            if let Some(kth) = self.book.kth_best_model_path.take() {
                self.book.best_k_models.retain(|(p, _)| *p != kth);
                evicted = Some(kth);
            }
        }
        let current = if current.is_nan() {
            mode.worst()
        } else {
            current
        };
        let path = self
            .namer
            .versioned(&cfg.filename, self.reusable(evicted.as_deref()))?;
        self.book.current_score = Some(current);
        self.book.best_k_models.retain(|(p, _)| *p != path);
        self.book.best_k_models.push((path.clone(), current));
        if self.book.best_k_models.len() == k {
            let worst =
                self.book
                    .best_k_models
                    .iter()
                    .fold(None::<&(PathBuf, f64)>, |w, e| match w {
                        Some(w) if !mode.better(w.1, e.1) => Some(w),
                        _ => Some(e),
                    });
            if let Some((p, s)) = worst {
                self.book.kth_best_model_path = Some(p.clone());
                self.book.kth_value = *s;
            }
        }
        let best = self
            .book
            .best_k_models
            .iter()
            .fold(None::<&(PathBuf, f64)>, |b, e| match b {
                Some(b) if !mode.better(e.1, b.1) => Some(b),
                _ => Some(e),
            });
        if let Some((p, s)) = best {
            self.book.best_model_path = Some(p.clone());
            self.book.best_model_score = Some(*s);
        }
        let mut actions = Vec::new();
        self.save(path.clone(), &mut actions);
        if let Some(old) = evicted {
            self.delete_if_allowed(old, &path, &mut actions);
        }
        Ok(actions)
    }

    /// `save_without_monitor` (B.8) with G.4: keep-all never reuses a name.
    pub fn save_without_monitor(&mut self) -> Result<Vec<Action>> {
        let cfg: &CheckpointConfig = self.namer.cfg;
        let reusable = if cfg.save_top_k == -1 {
            None
        } else {
            self.book.best_model_path.clone()
        };
        let path = self
            .namer
            .versioned(&cfg.filename, self.reusable(reusable.as_deref()))?;
        let previous = self.book.best_model_path.replace(path.clone());
        let mut actions = Vec::new();
        self.save(path.clone(), &mut actions);
        if cfg.save_top_k == 1 {
            if let Some(previous) = previous {
                self.delete_if_allowed(previous, &path, &mut actions);
            }
        }
        Ok(actions)
    }

    /// `save_last` (B.9, G.3): a real file holding the latest state, or in link mode a relative symlink to
    /// the newest real file (a real file where none exists yet, and at the end of `fit` when the newest
    /// real file does not hold the final state).
    pub fn save_last(&mut self) -> Result<Vec<Action>> {
        let cfg: &CheckpointConfig = self.namer.cfg;
        if cfg.save_last == SaveLast::No {
            return Ok(Vec::new());
        }
        let reusable = self.reusable(self.book.last_model_path.as_deref());
        let path = self.namer.versioned(&cfg.name_last, reusable)?;
        let previous = self.book.last_model_path.replace(path.clone());
        let mut actions = Vec::new();
        let target = self
            .book
            .last_checkpoint_saved
            .clone()
            .filter(|t| *t != path);
        // A link holds the state of the file it names; after `fit`, `last` must hold the final state.
        let linkable = !self.end_of_fit || self.book.last_global_step_saved == self.global_step;
        match target {
            Some(target) if cfg.save_last == SaveLast::Link && cfg.save_top_k != 0 && linkable => {
                self.book.last_file_step = Some(self.book.last_global_step_saved);
                actions.push(Action::Link {
                    target,
                    link: path.clone(),
                })
            }
            _ => {
                self.book.last_file_step = Some(self.global_step);
                self.save(path.clone(), &mut actions)
            }
        }
        if let Some(previous) = previous {
            self.delete_if_allowed(previous, &path, &mut actions);
        }
        Ok(actions)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::super::config::ModelCheckpointBuilder;
    use super::*;

    /// A simulated directory: applies actions to a set of names.
    struct Sim {
        cfg: CheckpointConfig,
        book: Book,
        files: RefCell<BTreeSet<PathBuf>>,
        links: BTreeMap<PathBuf, PathBuf>,
    }

    const DIR: &str = "/ckpt";

    impl Sim {
        fn new(b: ModelCheckpointBuilder) -> Self {
            let cfg = b.config().unwrap();
            Self {
                book: Book::new(&cfg),
                cfg,
                files: RefCell::default(),
                links: BTreeMap::new(),
            }
        }

        fn with_file(self, name: &str) -> Self {
            self.files.borrow_mut().insert(Path::new(DIR).join(name));
            self
        }

        /// One trigger with metrics `m` (plus epoch and step): top-k then last, as the step trigger does.
        fn trigger(&mut self, epoch: i64, step: u64, m: &[(&str, f64)]) -> Vec<Action> {
            let mut cands: BTreeMap<String, MetricValue> = m
                .iter()
                .map(|(k, v)| (k.to_string(), MetricValue::F32(*v as f32)))
                .collect();
            cands.insert("epoch".into(), MetricValue::Int(epoch));
            cands.insert("step".into(), MetricValue::Int(step as i64));
            let files = &self.files;
            let exists = |p: &Path| files.borrow().contains(p);
            let namer = Namer {
                cfg: &self.cfg,
                dirpath: Path::new(DIR),
                cands: &cands,
                exists: &exists,
            };
            let mut d = Decide {
                book: &mut self.book,
                namer: &namer,
                global_step: step,
                keep: None,
                end_of_fit: false,
            };
            let mut actions = Vec::new();
            if self.cfg.save_top_k != 0 {
                match &self.cfg.monitor {
                    None => actions.extend(d.save_without_monitor().unwrap()),
                    Some(mon) => {
                        let current = cands[mon].as_f64();
                        if d.improves(current, &mut |b| Ok(b)).unwrap() {
                            actions.extend(d.update_best_and_save(current).unwrap());
                        }
                    }
                }
            }
            actions.extend(d.save_last().unwrap());
            let actions = in_safe_order(actions);
            for a in &actions {
                match a {
                    Action::Save { path, .. } => {
                        self.files.borrow_mut().insert(path.clone());
                        self.links.remove(path);
                    }
                    Action::Link { target, link } => {
                        self.files.borrow_mut().insert(link.clone());
                        self.links.insert(link.clone(), target.clone());
                    }
                    Action::Delete(p) => {
                        self.files.borrow_mut().remove(p);
                    }
                }
            }
            actions
        }

        fn names(&self) -> Vec<String> {
            self.files
                .borrow()
                .iter()
                .map(|p| p.strip_prefix(DIR).unwrap().to_string_lossy().into_owned())
                .collect()
        }

        fn name(p: &Option<PathBuf>) -> String {
            p.as_ref().map_or(String::new(), |p| {
                p.strip_prefix(DIR).unwrap().to_string_lossy().into_owned()
            })
        }
    }

    #[test]
    fn top2_min_keeps_the_best_two_and_deletes_after_writing() {
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .monitor("val")
                .save_top_k(2),
        );
        for (e, v) in [3.0, 2.0, 4.0, 1.0, 2.5].into_iter().enumerate() {
            s.trigger(e as i64, (e as u64 + 1) * 10, &[("val", v)]);
        }
        assert_eq!(s.names(), ["epoch=1-step=20.ckpt", "epoch=3-step=40.ckpt"]);
        assert_eq!(Sim::name(&s.book.best_model_path), "epoch=3-step=40.ckpt");
        assert_eq!(s.book.best_model_score, Some(1.0));
        assert_eq!(
            Sim::name(&s.book.kth_best_model_path),
            "epoch=1-step=20.ckpt"
        );
        assert_eq!(s.book.kth_value, 2.0);
        assert_eq!(s.book.current_score, Some(1.0), "the last accepted score");
    }

    #[test]
    fn the_new_file_is_written_before_the_evicted_one_is_deleted() {
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .monitor("val")
                .save_top_k(1),
        );
        s.trigger(0, 1, &[("val", 2.0)]);
        let actions = s.trigger(1, 2, &[("val", 1.0)]);
        assert!(
            matches!(&actions[..], [Action::Save { .. }, Action::Delete(_)]),
            "{actions:?}"
        );
    }

    #[test]
    fn ties_never_replace_and_nan_maps_to_the_worst_score() {
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .monitor("val")
                .save_top_k(1)
                .mode("max"),
        );
        s.trigger(0, 1, &[("val", f64::NAN)]);
        assert_eq!(s.book.best_model_score, Some(f64::NEG_INFINITY), "S054");
        s.trigger(1, 2, &[("val", 0.5)]);
        s.trigger(2, 3, &[("val", 0.5)]);
        assert_eq!(s.names(), ["epoch=1-step=2.ckpt"]);
        assert!(
            s.trigger(3, 4, &[("val", f64::NAN)]).is_empty(),
            "NaN never beats a full top-k"
        );
    }

    #[test]
    fn s033_without_monitor_only_the_latest_file_stays() {
        let mut s = Sim::new(ModelCheckpointBuilder::default());
        for e in 0..3 {
            s.trigger(e, (e as u64 + 1) * 5, &[]);
        }
        assert_eq!(s.names(), ["epoch=2-step=15.ckpt"]);
        assert_eq!(Sim::name(&s.book.best_model_path), "epoch=2-step=15.ckpt");
        assert_eq!(
            (s.book.best_model_score, s.book.kth_value),
            (None, f64::INFINITY)
        );
    }

    #[test]
    fn s035_a_fixed_name_is_overwritten_in_place() {
        let mut s = Sim::new(ModelCheckpointBuilder::default().filename("model"));
        for e in 0..3 {
            let actions = s.trigger(e, e as u64 + 1, &[]);
            assert_eq!(
                actions.len(),
                1,
                "no delete of the file just written: {actions:?}"
            );
            assert_eq!(s.names(), ["model.ckpt"]);
        }
    }

    #[test]
    fn s036_g4_keep_all_with_a_fixed_name_never_overwrites() {
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .filename("model")
                .save_top_k(-1),
        );
        for e in 0..3 {
            s.trigger(e, e as u64 + 1, &[]);
        }
        assert_eq!(s.names(), ["model-v1.ckpt", "model-v2.ckpt", "model.ckpt"]);
    }

    #[test]
    fn s046_an_evicted_name_is_recycled() {
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .monitor("val")
                .filename("best")
                .save_top_k(1),
        );
        s.trigger(0, 1, &[("val", 2.0)]);
        let actions = s.trigger(1, 2, &[("val", 1.0)]);
        assert_eq!(s.names(), ["best.ckpt"]);
        assert_eq!(
            actions.len(),
            1,
            "the evicted file is the new file: nothing to delete"
        );
    }

    #[test]
    fn g3_last_is_rewritten_at_every_trigger_and_keeps_its_name() {
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .monitor("val")
                .save_last(true),
        );
        for (e, v) in [1.0, 1.1, 0.8, 1.3].into_iter().enumerate() {
            s.trigger(e as i64, e as u64 + 1, &[("val", v)]);
            assert_eq!(s.book.last_file_step, Some(e as u64 + 1));
        }
        assert_eq!(s.names(), ["epoch=2-step=3.ckpt", "last.ckpt"]);
    }

    #[test]
    fn version_counter_skips_files_of_earlier_runs() {
        let mut s = Sim::new(ModelCheckpointBuilder::default().save_last(true))
            .with_file("last.ckpt")
            .with_file("epoch=0-step=1.ckpt");
        s.trigger(0, 1, &[]);
        assert_eq!(
            s.names(),
            [
                "epoch=0-step=1-v1.ckpt",
                "epoch=0-step=1.ckpt",
                "last-v1.ckpt",
                "last.ckpt"
            ]
        );
        s.trigger(1, 2, &[]);
        assert_eq!(
            Sim::name(&s.book.last_model_path),
            "last-v1.ckpt",
            "its own last file is reusable"
        );
        let mut s = Sim::new(ModelCheckpointBuilder::default().enable_version_counter(false))
            .with_file("epoch=0-step=1.ckpt");
        s.trigger(0, 1, &[]);
        assert_eq!(s.names(), ["epoch=0-step=1.ckpt"]);
    }

    #[test]
    fn templated_last_names_leave_one_file() {
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .save_top_k(0)
                .save_last(true)
                .name_last("last-{epoch}"),
        );
        s.trigger(0, 1, &[]);
        s.trigger(1, 2, &[]);
        assert_eq!(s.names(), ["last-epoch=1.ckpt"]);
    }

    #[test]
    fn link_mode_points_last_at_the_newest_real_file() {
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .save_top_k(-1)
                .save_last(SaveLast::Link),
        );
        s.trigger(0, 2, &[]);
        s.trigger(1, 4, &[]);
        assert_eq!(
            s.links[&Path::new(DIR).join("last.ckpt")],
            Path::new(DIR).join("epoch=1-step=4.ckpt")
        );
        // With nothing real (top_k = 0), last is a real file.
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .save_top_k(0)
                .save_last(SaveLast::Link),
        );
        let actions = s.trigger(0, 2, &[]);
        assert!(matches!(&actions[..], [Action::Save { .. }]) && s.links.is_empty());
    }

    #[test]
    fn link_mode_relinks_before_deleting_the_evicted_target() {
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .monitor("val")
                .save_last(SaveLast::Link),
        );
        s.trigger(0, 1, &[("val", 2.0)]);
        let actions = s.trigger(1, 2, &[("val", 1.0)]);
        assert!(
            matches!(
                &actions[..],
                [Action::Save { .. }, Action::Link { .. }, Action::Delete(_)]
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn the_saved_state_is_the_updated_one() {
        let mut s = Sim::new(
            ModelCheckpointBuilder::default()
                .monitor("val")
                .save_last(true),
        );
        let actions = s.trigger(0, 7, &[("val", 0.5)]);
        let Action::Save { path, book } = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(
            book.best_model_path.as_ref(),
            Some(path),
            "S074: state updated before writing"
        );
        let Action::Save { path, book } = &actions[1] else {
            panic!("{actions:?}")
        };
        assert_eq!(book.last_model_path.as_ref(), Some(path), "S073");
    }

    #[test]
    fn deletion_is_confined_to_own_names_and_spares_the_file_to_keep() {
        let cfg = ModelCheckpointBuilder::default().config().unwrap();
        let own = OwnNames::new(&cfg);
        let d = Path::new("/ckpt");
        let owns = |p: &Path| own.contains(p, d);
        let remove = |previous: &str, keep: Option<&str>| {
            should_remove(
                Path::new(previous),
                Path::new("/ckpt/epoch=9-step=9.ckpt"),
                keep.map(Path::new),
                owns,
            )
        };
        assert!(remove("/ckpt/epoch=1-step=4.ckpt", None));
        assert!(remove("/ckpt/last-v2.ckpt", None), "a `last` name");
        assert!(
            !remove("/ckpt/epoch=9-step=9.ckpt", None),
            "the current file"
        );
        assert!(!remove(
            "/ckpt/epoch=1-step=4.ckpt",
            Some("/ckpt/epoch=1-step=4.ckpt")
        ));
        for foreign in [
            "/old/epoch=1-step=4.ckpt",
            "/ckptx/epoch=1-step=4.ckpt",
            "/ckpt/exp1/epoch=1-step=4.ckpt",
            "/ckpt/notes.txt",
            "/ckpt/epoch=1-step=4.pt",
            "/ckpt/../etc/passwd",
            "/ckpt/sub/../../home/x.ckpt",
            "/ckpt/sub/../epoch=1-step=4.ckpt",
            "/ckpt/./epoch=1-step=4.ckpt/..",
        ] {
            assert!(!remove(foreign, None), "{foreign}");
        }
    }
}
