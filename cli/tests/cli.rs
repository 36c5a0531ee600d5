//! The `fulgur` command line on the files of a real run: a classifier trained on the digits with
//! top-2 checkpoints, `last.ckpt` and the CSV logger.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use assert_cmd::prelude::*;
use fulgur::checkpoint::read_checkpoint;
use fulgur::dfdx::optim::AdamConfig;
use fulgur::dfdx::prelude::*;
use fulgur::optim::Adam;
use fulgur::prelude::*;

type Mlp = (Linear<64, 32>, ReLU, Linear<32, 10>);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "fulgur::serde")]
struct Config {
    lr: f64,
    hidden_note: String,
}

#[derive(ModuleState)]
struct LitClassifier<D: Backend> {
    net: Built<Mlp, D>,
    #[hparams]
    config: Config,
}

#[lightning_module]
#[checkpoint(
    monitor = "val_loss",
    top_k = 2,
    filename = "{epoch}-{val_loss:.4f}",
    save_last = true
)]
impl<D: Backend> LitClassifier<D> {
    fn configure_optimizers(&self) -> Adam<D> {
        Adam::new(AdamConfig {
            lr: self.config.lr,
            ..Default::default()
        })
    }

    #[log(train_loss)]
    fn training_step(
        &mut self,
        batch: ClassificationBatch<64, 10, D>,
        grads: Gradients<f32, D>,
    ) -> Loss<D> {
        let logits = self.net.forward_mut(batch.x.traced(grads));
        cross_entropy_with_logits_loss(logits, batch.y)
    }

    #[log(val_loss)]
    fn validation_step(&self, batch: ClassificationBatch<64, 10, D>) -> f32 {
        cross_entropy_with_logits_loss(self.net.forward(batch.x), batch.y).as_vec()[0]
    }
}

struct Run {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Run {
    fn checkpoints(&self) -> PathBuf {
        self.root.join("lightning_logs/version_0/checkpoints")
    }
    fn version(&self) -> PathBuf {
        self.root.join("lightning_logs/version_0")
    }
    fn ckpt(&self, prefix: &str) -> PathBuf {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.checkpoints())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .collect();
        files.sort();
        files
            .pop()
            .unwrap_or_else(|| panic!("no checkpoint starting with {prefix}"))
    }
}

/// One training run shared by the tests: 4 epochs on the digits.
fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let dev = Cpu::seed_from_u64(0);
        let digits = fulgur::datasets::digits().unwrap();
        let (train, val) = digits.split(0.2, 0).unwrap();
        let mut train = train.loader(64, true, &dev).unwrap();
        let mut val = val.loader(128, false, &dev).unwrap();
        let config = Config {
            lr: 3e-3,
            hidden_note: "2024-01-01".into(),
        };
        let model = LitClassifier::from_hparams(config, &dev).unwrap();
        let mut trainer = Trainer::builder()
            .max_epochs(4)
            .default_root_dir(&root)
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .build()
            .unwrap();
        trainer
            .fit(model, &mut train, Some(&mut val), None)
            .unwrap();
        Run { _dir: dir, root }
    })
}

fn fulgur() -> Command {
    Command::cargo_bin("fulgur").unwrap()
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn call(args: &[&std::ffi::OsStr]) -> Out {
    let out = fulgur().args(args).output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new(&$a)),*] };
}

#[test]
fn inspect_shows_counters_hyperparameters_callbacks_and_every_tensor() {
    let r = run();
    let last = r.ckpt("last");
    let out = call(args!["inspect", last]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout;
    for expected in [
        "format           fulgur-checkpoint v1",
        "LitClassifier",
        "epoch            3",
        "global step      92",
        "weights only     no",
        "monitored        val_loss = ",
        r#""hidden_note":"2024-01-01""#,
        "ModelCheckpoint{'monitor': 'val_loss'",
        "tensors          4 (",
        "net.0.weight  f32    [32, 64]        8192",
        "net.2.bias    f32    [10]              40",
        "optimizer 0      adam (step 92",
        "net.0.weight.exp_avg_sq",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }

    let json = call(args!["inspect", last, "--json"]);
    assert_eq!(json.code, 0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["global_step"], 92);
    assert_eq!(v["hyper_parameters"]["lr"], 3e-3);
    assert_eq!(v["tensors"][1]["name"], "net.0.weight");
    assert_eq!(v["tensors"][1]["shape"], serde_json::json!([32, 64]));
    assert_eq!(v["optimizers"][0]["tensors"].as_array().unwrap().len(), 8);
    assert_eq!(v["monitored"][0]["monitor"], "val_loss");
}

fn damaged_copy(from: &Path, dir: &Path, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(from).unwrap();
    damage(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn verify_finds_every_file_intact_names_best_and_last_and_reports_damage() {
    let r = run();
    let out = call(args!["verify", r.checkpoints()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("3 checkpoints: 3 intact, 0 damaged"),
        "{}",
        out.stdout
    );
    let best_line = out
        .stdout
        .lines()
        .find(|l| l.contains("best (val_loss"))
        .unwrap();
    let best = read_checkpoint(r.ckpt("last")).unwrap();
    let state = fulgur_cli_state(&best);
    assert!(
        best_line.contains(&state.0),
        "{best_line} should name {}",
        state.0
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("last.ckpt") && l.ends_with("last")),
        "{}",
        out.stdout
    );

    let dir = tempfile::tempdir().unwrap();
    let source = r.ckpt("last");
    let len = std::fs::metadata(&source).unwrap().len() as usize;
    // A bit inside the data of the largest tensor (the file's middle), and a cut-off copy.
    let flipped = damaged_copy(&source, dir.path(), "flipped.ckpt", |b| b[len / 2] ^= 0x10);
    let truncated = damaged_copy(&source, dir.path(), "truncated.ckpt", |b| {
        b.truncate(len - 100)
    });
    let out = call(args!["verify", source, flipped, truncated]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let line = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap()
            .to_string()
    };
    assert!(
        line("flipped.ckpt").starts_with("DAMAGED"),
        "{}",
        out.stdout
    );
    assert!(
        line("flipped.ckpt").contains("checksum"),
        "{}",
        line("flipped.ckpt")
    );
    assert!(
        line("truncated.ckpt").starts_with("DAMAGED"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("3 checkpoints: 1 intact, 2 damaged"),
        "{}",
        out.stdout
    );

    let json = call(args!["verify", flipped, "--json"]);
    assert_eq!(json.code, 1);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["all_intact"], false);
    assert_eq!(v["files"][0]["intact"], false);
}

/// The best file's name and score as the run's last state records them.
fn fulgur_cli_state(c: &fulgur::checkpoint::Checkpoint) -> (String, f64) {
    let s = &fulgur_cli::checkpoint_callbacks(&c.callbacks)[0];
    let name = Path::new(s.best_model_path.as_deref().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (name, s.best_model_score.unwrap())
}

#[test]
fn diff_reports_changed_tensors_and_metadata_and_nothing_for_a_file_and_itself() {
    let r = run();
    let files: Vec<PathBuf> = {
        let mut f: Vec<PathBuf> = std::fs::read_dir(r.checkpoints())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.ends_with("last.ckpt"))
            .collect();
        f.sort();
        f
    };
    let (a, b) = (&files[0], &files[1]);
    let out = call(args!["diff", a, b]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout.contains("~ net.0.weight: max |a-b| "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("~ optimizer 0: net.0.weight.exp_avg: "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("~ global_step: "), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("0 added, 0 removed, 12 changed, 0 identical tensors"),
        "{}",
        out.stdout
    );

    // The relative L2 difference is the one computed here.
    let (ca, cb) = (read_checkpoint(a).unwrap(), read_checkpoint(b).unwrap());
    let (x, y) = (
        ca.state_dict["net.2.weight"].as_f32().unwrap().into_owned(),
        cb.state_dict["net.2.weight"].as_f32().unwrap().into_owned(),
    );
    let d: f64 = x
        .iter()
        .zip(&y)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let n: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
    let json = call(args!["diff", a, b, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let entry = v["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "net.2.weight")
        .unwrap();
    let rel = entry["rel_l2"].as_f64().unwrap();
    assert!((rel - d / n).abs() < 1e-6 * (d / n), "{rel} vs {}", d / n);

    let same = call(args!["diff", a, a]);
    assert_eq!(same.code, 0, "{}", same.stdout);
    assert!(
        same.stdout
            .contains("0 changed, 12 identical tensors; 0 metadata fields differ"),
        "{}",
        same.stdout
    );
}

#[test]
fn export_then_import_round_trips_the_weights_and_the_module_loads() {
    let r = run();
    let dir = tempfile::tempdir().unwrap();
    let last = r.ckpt("last");
    let st = dir.path().join("model.safetensors");
    let out = call(args!["export", last, "--to", st]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("(4 tensors, "), "{}", out.stdout);

    // The safetensors crate reads it: names, layout [out, in], values.
    let bytes = std::fs::read(&st).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let original = read_checkpoint(&last).unwrap();
    let w = tensors.tensor("net.0.weight").unwrap();
    assert_eq!(w.shape(), [32, 64]);
    assert_eq!(w.data(), &*original.state_dict["net.0.weight"].le_bytes());

    let back = dir.path().join("imported.ckpt");
    let out = call(args!["import", st, "--into", back]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let imported = read_checkpoint(&back).unwrap();
    assert!(imported.weights_only);
    for (name, t) in &original.state_dict {
        assert_eq!(imported.state_dict[name].le_bytes(), t.le_bytes(), "{name}");
    }
    // The module rebuilds from the imported file alone (hyperparameters from the export's metadata).
    let dev = Cpu::default();
    let model = LitClassifier::<Cpu>::load_from_checkpoint(&back, &dev).unwrap();
    assert_eq!(model.config.hidden_note, "2024-01-01");
    let x: Tensor<Rank2<1, 64>, f32, Cpu> = dev.tensor([[0.5; 64]]);
    let reference = LitClassifier::<Cpu>::load_from_checkpoint(&last, &dev).unwrap();
    assert_eq!(
        model.net.forward(x.clone()).as_vec(),
        reference.net.forward(x).as_vec()
    );

    // With explicit hyperparameters from YAML.
    let yaml = dir.path().join("h.yaml");
    std::fs::write(&yaml, "lr: 0.5\nhidden_note: from yaml\n").unwrap();
    let again = dir.path().join("again.ckpt");
    let out = call(args!["import", st, "--into", again, "--hparams", yaml]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let model = LitClassifier::<Cpu>::load_from_checkpoint(&again, &dev).unwrap();
    assert_eq!(model.config.hidden_note, "from yaml");
}

/// PyTorch's `Sequential(Linear(64, 32), ReLU(), Linear(32, 10))` wrapped in a module with a `net`
/// attribute (the name fulgur gives the field), loading the export strictly; without torch, the same
/// forward pass written with numpy on `safetensors.numpy.load_file`, with `torch.nn.Linear`'s formula
/// `x Wᵀ + b` and its weight layout `[out, in]`.
const PYTHON: &str = r#"
import sys
x = [[i / 64 for i in range(64)]]
try:
    import torch, safetensors.torch
    class Lit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        def forward(self, x):
            return self.net(x)
    m = Lit()
    m.load_state_dict(safetensors.torch.load_file(sys.argv[1]))
    with torch.no_grad():
        out = m(torch.tensor(x))[0].tolist()
    print("torch")
except ImportError:
    import numpy as np, safetensors.numpy
    w = safetensors.numpy.load_file(sys.argv[1])
    assert sorted(w) == ["net.0.bias", "net.0.weight", "net.2.bias", "net.2.weight"], sorted(w)
    assert w["net.0.weight"].shape == (32, 64) and w["net.2.weight"].shape == (10, 32)
    h = np.maximum(np.array(x, dtype=np.float32) @ w["net.0.weight"].T + w["net.0.bias"], 0)
    out = (h @ w["net.2.weight"].T + w["net.2.bias"])[0].tolist()
    print("numpy")
print(" ".join(repr(v) for v in out))
"#;

#[test]
fn python_loads_the_export_and_computes_the_same_forward_pass() {
    let probe = Command::new("python3")
        .args(["-c", "import safetensors; import torch"])
        .output();
    let numpy = Command::new("python3")
        .args(["-c", "import safetensors.numpy, numpy"])
        .output();
    let usable = |o: std::io::Result<std::process::Output>| o.is_ok_and(|o| o.status.success());
    if !usable(probe) && !usable(numpy) {
        eprintln!("notice: python3 with safetensors and torch (or numpy) is not available; the Python check is skipped");
        return;
    }
    let r = run();
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("model.safetensors");
    let out = call(args!["export", r.ckpt("last"), "--to", st]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = Command::new("python3")
        .args(["-c", PYTHON])
        .arg(&st)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    eprintln!("compared with {}", lines.next().unwrap_or("?"));
    let python: Vec<f32> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let dev = Cpu::default();
    let model = LitClassifier::<Cpu>::load_from_checkpoint(r.ckpt("last"), &dev).unwrap();
    let x: Tensor<Rank2<1, 64>, f32, Cpu> = dev.tensor([std::array::from_fn(|i| i as f32 / 64.0)]);
    let ours = model.net.forward(x).as_vec();
    assert_eq!(python.len(), 10, "{stdout}");
    for (a, b) in ours.iter().zip(&python) {
        assert!((a - b).abs() < 1e-5, "fulgur {ours:?} vs python {python:?}");
    }
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn plot_draws_the_runs_curves_as_svg_and_png() {
    let r = run();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("curves.svg");
    let out = call(args!["plot", r.version(), "--out", svg]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("(1000x840, train_loss, val_loss from "),
        "{}",
        out.stdout
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains(r#"<svg width="1000" height="840""#),
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(text.contains("<polyline"), "a line is drawn");
    assert!(text.contains("val_loss") && text.contains("by epoch"));

    let png = dir.path().join("curves.png");
    // From the parent directory: the newest version_N is found.
    let out = call(args![
        "plot",
        r.root.join("lightning_logs"),
        "--metrics",
        "val_loss",
        "--out",
        png
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(png_size(&bytes), (1000, 840));
    assert!(
        bytes.len() > 5_000,
        "a drawn chart, not an empty image: {} bytes",
        bytes.len()
    );
}

#[test]
fn bad_input_is_a_clear_error_with_status_2_and_never_a_panic() {
    let r = run();
    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("notes.ckpt");
    std::fs::write(&text_file, "not a checkpoint").unwrap();
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec!["inspect".into(), dir.path().join("missing.ckpt").into()],
            "missing.ckpt",
        ),
        (
            vec!["inspect".into(), text_file.clone().into()],
            "is not a fulgur checkpoint",
        ),
        (
            vec![
                "diff".into(),
                text_file.clone().into(),
                r.ckpt("last").into(),
            ],
            "notes.ckpt",
        ),
        (
            vec![
                "export".into(),
                text_file.clone().into(),
                "--to".into(),
                dir.path().join("x.safetensors").into(),
            ],
            "notes.ckpt",
        ),
        (
            vec![
                "import".into(),
                text_file.clone().into(),
                "--into".into(),
                dir.path().join("y.ckpt").into(),
            ],
            "is not a valid safetensors file",
        ),
        (
            vec![
                "plot".into(),
                r.version().into(),
                "--metrics".into(),
                "val_los".into(),
                "--out".into(),
                dir.path().join("p.svg").into(),
            ],
            "its metrics are: train_loss, val_loss",
        ),
        (
            vec![
                "plot".into(),
                r.version().into(),
                "--out".into(),
                dir.path().join("p.jpg").into(),
            ],
            "must end in `.svg` or `.png`",
        ),
        (
            vec![
                "plot".into(),
                dir.path().into(),
                "--out".into(),
                dir.path().join("p.svg").into(),
            ],
            "no metrics.csv",
        ),
    ];
    for (args, expected) in cases {
        let out = fulgur().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = call(args!["verify", dir.path().join("nothing-here")]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("does not exist"), "{}", out.stdout);
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let r = run();
    let mut child = fulgur()
        .args([
            std::ffi::OsStr::new("inspect"),
            r.ckpt("last").as_os_str(),
            std::ffi::OsStr::new("--json"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reading end closes before the checkpoint is read, as `fulgur inspect … | head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// Tensors above the reader's lazy threshold (64 KiB) are verified and compared from the file, one at a
/// time: a flipped bit in one is found and named, and `diff` reads their values back.
#[test]
fn large_tensors_are_verified_and_compared_from_the_file() {
    use fulgur::checkpoint::{write_checkpoint, Checkpoint, TensorData};
    let dir = tempfile::tempdir().unwrap();
    let n = 100_000;
    let file = |name: &str, scale: f32| {
        let mut c = Checkpoint::new("big");
        let values: Vec<f32> = (0..n).map(|i| i as f32 * scale).collect();
        c.state_dict
            .insert("big.weight".into(), TensorData::from_f32(vec![n], values));
        c.state_dict.insert(
            "small.bias".into(),
            TensorData::from_f32(vec![2], vec![1.0, 2.0]),
        );
        let path = dir.path().join(name);
        write_checkpoint(&path, &c).unwrap();
        path
    };
    let (a, b) = (file("a.ckpt", 1.0), file("b.ckpt", 1.5));
    let out = call(args!["diff", a, b]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    // max |a - b| = 0.5 × 99 999, relative L2 = 0.5.
    assert!(
        out.stdout
            .contains("~ big.weight: max |a-b| 5.000e4, relative L2 5.000e-1"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("1 changed, 1 identical tensors"),
        "{}",
        out.stdout
    );

    let bytes = std::fs::read(&a).unwrap();
    let flipped = damaged_copy(&a, dir.path(), "flipped.ckpt", |b| b[bytes.len() / 2] ^= 1);
    let out = call(args!["verify", flipped]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("checksum mismatch in tensor `big.weight`"),
        "{}",
        out.stdout
    );
    let out = call(args!["inspect", flipped]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("big.weight"), "{}", out.stderr);
}
