//! Loading checkpoints: `load_from_checkpoint`, strict loading errors, weights-only files.

use fulgur::checkpoint::{read_checkpoint, write_checkpoint, TensorData};
use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;

use crate::support::mlp::{loaders, Hparams, LitMlp};
use crate::support::{fit_error, fit_from, weight_bits};

fn trained(dir: &std::path::Path) -> Trainer<LitMlp<Cpu>> {
    let (mut train, mut val) = loaders();
    let mut t = Trainer::builder()
        .max_steps(10)
        .default_root_dir(dir)
        .no_logger()
        .enable_checkpointing(false)
        .build()
        .unwrap();
    let hp = Hparams {
        lr: 3e-3,
        init_seed: 4,
        with_scheduler: false,
    };
    t.fit(LitMlp::new(hp), &mut train, Some(&mut val), None)
        .unwrap();
    t
}

#[test]
fn load_from_checkpoint_rebuilds_the_module_from_its_hyperparameters() {
    let dir = tempfile::tempdir().unwrap();
    let t = trained(dir.path());
    let path = dir.path().join("m.ckpt");
    t.save_checkpoint(&path, false).unwrap();
    let loaded = LitMlp::load_from_checkpoint(&path, &Cpu::default()).unwrap();
    assert_eq!(loaded.hparams, t.module().unwrap().hparams);
    assert_eq!(weight_bits(&loaded), weight_bits(t.module().unwrap()));
    let names: Vec<String> = weight_bits(&loaded).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "head.bias",
            "head.weight",
            "net.0.bias",
            "net.0.weight",
            "net.2.bias",
            "net.2.weight"
        ]
    );
}

#[test]
fn strict_loading_reports_every_mismatch_in_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.ckpt");
    trained(dir.path()).save_checkpoint(&path, false).unwrap();
    let mut ckpt = read_checkpoint(&path).unwrap();
    ckpt.state_dict.remove("net.0.bias");
    ckpt.state_dict.remove("head.bias");
    ckpt.state_dict.insert(
        "extra.weight".into(),
        TensorData::from_f32(vec![2], vec![1.0, 2.0]),
    );
    ckpt.state_dict.insert(
        "head.weight".into(),
        TensorData::from_f32(vec![5, 10], vec![0.0; 50]),
    );
    ckpt.state_dict.insert(
        "net.2.bias".into(),
        TensorData::from_f64(vec![10], vec![0.0; 10]),
    );
    write_checkpoint(&path, &ckpt).unwrap();

    let err = LitMlp::load_from_checkpoint(&path, &Cpu::default())
        .err()
        .expect("strict load must fail")
        .to_string();
    assert!(
        err.contains(&path.display().to_string()),
        "names the file: {err}"
    );
    assert!(
        err.contains("missing keys (in the module, not in the file): `head.bias`, `net.0.bias`"),
        "{err}"
    );
    assert!(
        err.contains("unexpected keys (in the file, not in the module): `extra.weight`"),
        "{err}"
    );
    assert!(
        err.contains("`head.weight`: expected f32 [10, 10], found f32 [5, 10]"),
        "{err}"
    );
    assert!(
        err.contains("`net.2.bias`: expected f32 [10], found f64 [10]"),
        "{err}"
    );
}

#[test]
fn a_failed_strict_load_leaves_the_module_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.ckpt");
    let t = trained(dir.path());
    t.save_checkpoint(&path, false).unwrap();
    let mut ckpt = read_checkpoint(&path).unwrap();
    ckpt.state_dict.remove("head.bias");
    let mut fresh = LitMlp::new(Hparams::default());
    let before = weight_bits(&fresh);
    assert!(fulgur::module::load_state_dict(&mut fresh, &ckpt.state_dict, true, &path).is_err());
    assert_eq!(weight_bits(&fresh), before);
    // Non-strict loading takes what matches.
    fulgur::module::load_state_dict(&mut fresh, &ckpt.state_dict, false, &path).unwrap();
    let loaded = weight_bits(&fresh);
    let trained = weight_bits(t.module().unwrap());
    assert_eq!(loaded[1..], trained[1..]);
    assert_eq!(
        loaded[0], before[0],
        "`head.bias` was not in the file and keeps its value"
    );
}

#[test]
fn a_weights_only_file_cannot_resume_fit_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.ckpt");
    let t = trained(dir.path());
    t.save_checkpoint(&path, true).unwrap();
    let ckpt = read_checkpoint(&path).unwrap();
    assert!(ckpt.weights_only && ckpt.optimizer.is_none() && ckpt.callbacks.is_empty());
    assert!(
        ckpt.hyper_parameters.is_some(),
        "hyperparameters are kept, so the module can be rebuilt"
    );

    let (err, t2) = fit_error(
        Trainer::builder().max_steps(20),
        CkptPath::Path(path.clone()),
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("holds only the module's weights"), "{err}");
    assert!(err.contains("cannot resume `fit`"), "{err}");
    assert_eq!(t2.global_step(), 0);
    // But it loads for inference.
    let m = LitMlp::load_from_checkpoint(&path, &Cpu::default()).unwrap();
    assert_eq!(weight_bits(&m), weight_bits(t.module().unwrap()));
}

#[test]
fn save_checkpoint_without_a_module_is_an_error() {
    let t: Trainer<LitMlp<Cpu>> = Trainer::builder()
        .no_logger()
        .enable_checkpointing(false)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = t
        .save_checkpoint(dir.path().join("x.ckpt"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("only possible if a module is attached"),
        "{err}"
    );
    assert!(!dir.path().join("x.ckpt").exists());
}

#[test]
fn a_missing_checkpoint_file_is_a_clear_error() {
    let (err, _) = fit_error(Trainer::builder().max_steps(2), "does/not/exist.ckpt");
    assert!(err.contains("does/not/exist.ckpt"), "{err}");
}

/// Runs `load` on another thread and returns its error message; a load that blocks (as `open` does on a
/// FIFO with no writer) fails the test after a generous timeout instead of hanging it.
#[cfg(unix)]
fn error_without_hanging<T: Send + 'static>(
    what: &str,
    path: &std::path::Path,
    load: impl FnOnce(std::path::PathBuf) -> fulgur::Result<T> + Send + 'static,
) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(load(owned).map(|_| ()).map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Err(e)) => e,
        Ok(Ok(())) => panic!("{what}: `{}` loaded", path.display()),
        Err(_) => {
            // Unblock the reader (opening the write end completes its `open`), then fail.
            let _ = std::fs::OpenOptions::new().write(true).open(path);
            panic!("{what}: reading `{}` blocked for 60 s", path.display())
        }
    }
}

#[cfg(unix)]
#[test]
fn a_fifo_socket_device_or_directory_is_an_error_naming_it_never_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.ckpt");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let socket = dir.path().join("socket.ckpt");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let directory = dir.path().join("directory.ckpt");
    std::fs::create_dir(&directory).unwrap();
    let link = dir.path().join("link-to-fifo.ckpt");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let device = std::path::Path::new("/dev/null");

    for (path, kind) in [
        (fifo.as_path(), "is a named pipe (FIFO)"),
        (link.as_path(), "is a named pipe (FIFO)"),
        (socket.as_path(), "is a socket"),
        (directory.as_path(), "is a directory"),
        (device, "is a character device"),
    ] {
        let errors = [
            error_without_hanging("read_checkpoint", path, |p| Ok(read_checkpoint(&p)?)),
            error_without_hanging("read_checkpoint_header", path, |p| {
                Ok(fulgur::checkpoint::read_checkpoint_header(&p)?)
            }),
            error_without_hanging("load_from_checkpoint", path, |p| {
                LitMlp::load_from_checkpoint(p, &Cpu::default())
            }),
            error_without_hanging("fit", path, |p| {
                let builder = Trainer::builder()
                    .max_steps(2)
                    .enable_progress_bar(false)
                    .enable_model_summary(false);
                fit_from(builder, CkptPath::Path(p)).1
            }),
        ];
        for err in errors {
            assert!(
                err.contains(&path.display().to_string()),
                "names the path: {err}"
            );
            assert!(err.contains(kind), "says `{kind}`: {err}");
            assert!(err.contains("not a regular file"), "{err}");
        }
    }
}
