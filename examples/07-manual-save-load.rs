//! Save a checkpoint by hand after training, look inside it, and load the model back.
//!
//! ```text
//! cargo run --release --example 07-manual-save-load
//! ```
//!
//! No checkpoint callback here (`enable_checkpointing(false)`): after `fit`, `Trainer::save_checkpoint`
//! writes the trainer's current state, in full or weights only, and only on the process of rank 0 when
//! there are several. `read_checkpoint` returns the file as a typed `Checkpoint`; `load_from_checkpoint`
//! rebuilds the module from it. The guide's "The checkpoint file" chapter describes every field.

mod common;

use std::collections::BTreeSet;

use common::{Config, LitClassifier};
use fulgur::checkpoint::read_checkpoint;
use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

fn main() -> fulgur::Result<()> {
    let root = common::fresh_dir("07-manual-save-load")?;
    let config = Config::new();
    let dev = config.device();
    let (mut train, mut val) = common::digits(&dev)?;

    let model = LitClassifier::from_hparams(config, &dev)?;
    let mut trainer = Trainer::builder()
        .max_epochs(5)
        .default_root_dir(&root)
        .no_logger()
        .enable_checkpointing(false)
        .build()?;
    trainer.fit(model, &mut train, Some(&mut val), None)?;

    // Lightning: trainer.save_checkpoint("example.ckpt") and
    //            trainer.save_checkpoint("example-weights.ckpt", weights_only=True)
    let path = root.join("example.ckpt");
    trainer.save_checkpoint(&path, false)?;
    trainer.save_checkpoint(root.join("example-weights.ckpt"), true)?;
    common::list_checkpoints(&root)?;

    // What is inside.
    let ckpt = read_checkpoint(&path)?;
    println!("\n{}:", path.display());
    println!(
        "  written by     fulgur {} for {}",
        ckpt.fulgur_version, ckpt.module_type
    );
    // After `fit`, the epoch counts the finished epochs (Lightning's `current_epoch`).
    println!("  epoch          {}", ckpt.epoch);
    println!("  global_step    {}", ckpt.global_step);
    println!("  weights_only   {}", ckpt.weights_only);
    for (name, tensor) in &ckpt.state_dict {
        println!(
            "  state_dict     {name:<12} {} {:?}",
            tensor.dtype(),
            tensor.shape()
        );
    }
    if let Some(opt) = &ckpt.optimizer {
        let slots: BTreeSet<&str> = opt
            .params
            .values()
            .flat_map(|s| s.keys())
            .map(String::as_str)
            .collect();
        println!(
            "  optimizer      {} after {} steps, lr {}, {} for each of {} parameters",
            opt.kind,
            opt.step,
            opt.lr,
            slots.into_iter().collect::<Vec<_>>().join(" and "),
            opt.params.len(),
        );
    }
    // The hyperparameters decode back into the module's own type.
    if let Some(value) = &ckpt.hyper_parameters {
        let hparams: Config = value
            .deserialized()
            .map_err(|e| fulgur::Error::user(format!("hyperparameters: {e}")))?;
        println!("  hparams        {hparams:?}");
    }
    let loops = &ckpt.loops;
    println!(
        "  loops          epoch {}, {} batches done in it, data-order seed {}",
        loops.epoch, loops.batches_done, loops.seed
    );

    // Lightning: LitClassifier.load_from_checkpoint("example.ckpt")
    let reloaded = LitClassifier::<Cpu>::load_from_checkpoint(&path, &dev)?;
    let metrics =
        Trainer::builder()
            .no_logger()
            .build()?
            .validate(Some(reloaded), &mut val, None)?;
    println!(
        "\nreloaded: val_loss {:.4}  val_acc {:.3}; after fit: val_loss {:.4}  val_acc {:.3}",
        metrics["val_loss"].as_f64(),
        metrics["val_acc"].as_f64(),
        trainer.callback_metrics()["val_loss"].as_f64(),
        trainer.callback_metrics()["val_acc"].as_f64(),
    );
    Ok(())
}
