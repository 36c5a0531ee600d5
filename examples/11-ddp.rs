//! The quickstart trained data-parallel on Open MPI, then Lightning's "manual saving with distributed
//! training": `save_checkpoint` called on every rank, one file written, read back at once by rank 1.
//!
//! ```text
//! cargo build --release --features mpi --example 11-ddp
//! mpirun -n 2 target/release/examples/11-ddp
//! ```
//!
//! In a container that runs as root, Open MPI wants `--allow-run-as-root`, and `--oversubscribe` when
//! there are fewer cores than processes:
//!
//! ```text
//! mpirun --allow-run-as-root --oversubscribe -n 2 target/release/examples/11-ddp
//! ```
//!
//! Started without `mpirun` it is a world of one process and trains as the quickstart does. The only
//! change to a single-process script is the strategy: the trainer broadcasts rank 0's weights when `fit`
//! starts, gives each rank its share of every epoch (two ranks with batches of 32 step on 64 samples),
//! averages the gradients and reduces the epoch metrics across the ranks, so that the `ModelCheckpoint`
//! takes the same decisions everywhere while rank 0 alone writes. The guide's "Distributed training"
//! chapter has the rules.

mod common;

use common::{Config, LitClassifier, PrintMetrics};
use fulgur::callbacks::ModelCheckpoint;
use fulgur::checkpoint::read_checkpoint;
use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;
use fulgur::strategy::{Ddp, Strategy};

fn main() -> fulgur::Result<()> {
    let ddp = Ddp::new()?;
    let (rank, world) = (ddp.rank(), ddp.world_size());

    // Rank 0 empties the directory of an earlier run; the others wait, so none deletes a new file.
    let root = std::env::temp_dir().join("fulgur-examples").join("11-ddp");
    if rank == 0 {
        common::fresh_dir("11-ddp")?;
        println!("{world} process(es), global batch {}", 32 * world);
    }
    ddp.barrier()?;

    let config = Config::new();
    // A different device seed on each rank, on purpose: `fit` starts every rank from rank 0's weights.
    let dev = Cpu::seed_from_u64(config.seed + rank as u64);
    let (mut train, mut val) = common::digits(&dev)?;

    // Lightning: ModelCheckpoint(dirpath=..., monitor="val_loss", save_top_k=2, save_last=True)
    let best_two = ModelCheckpoint::builder()
        .dirpath(root.join("checkpoints"))
        .filename("digits-{epoch:02d}-{val_loss:.3f}")
        .monitor("val_loss")
        .save_top_k(2)
        .save_last(true)
        .build()?;

    let model = LitClassifier::from_hparams(config, &dev)?;
    let mut builder = Trainer::builder()
        .max_epochs(5)
        .default_root_dir(&root)
        // Under mpirun, standard output is a pipe, not a terminal: rank 0's lines below say more.
        .enable_progress_bar(false)
        .strategy(ddp.clone())
        .callback(best_two);
    if rank == 0 {
        // A callback of the program's own prints on every rank; one line per epoch is enough.
        builder = builder.callback(PrintMetrics);
    }
    let mut trainer = builder.build()?;
    trainer.fit(model, &mut train, Some(&mut val), None)?;

    // Every rank holds the same reduced `val_loss`, so every rank names the same best file.
    if let Some(cb) = trainer.checkpoint_callback() {
        let best = cb.best_model_path().map(|p| p.display().to_string());
        let score = cb.best_model_score().unwrap_or(f64::NAN);
        println!(
            "rank {rank}: best {} (val_loss {score:.4})",
            best.unwrap_or_default()
        );
    }

    // Lightning: trainer.save_checkpoint("example.ckpt"), on every rank. Rank 0 writes the one file;
    // every rank returns only once it is complete.
    let path = root.join("example.ckpt");
    trainer.save_checkpoint(&path, false)?;

    // So the last rank (rank 1 of two) may read it right away, and never sees half a file.
    if rank == world - 1 {
        let ckpt = read_checkpoint(&path)?;
        println!(
            "rank {rank}: read {} right after saving: epoch {}, global_step {}",
            path.display(),
            ckpt.epoch,
            ckpt.global_step
        );
        let restored = LitClassifier::<Cpu>::load_from_checkpoint(&path, &dev)?;
        // A fresh loader: `fit` handed `val` this rank's share; this evaluation sees every image.
        let (_, mut val) = common::digits(&dev)?;
        let metrics = Trainer::builder()
            .no_logger()
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .build()?
            .validate(Some(restored), &mut val, None)?;
        println!(
            "rank {rank}: reloaded model: val_loss {:.4}  val_acc {:.3}",
            metrics["val_loss"].as_f64(),
            metrics["val_acc"].as_f64()
        );
    }
    // The listing after the lines above, not among them.
    ddp.barrier()?;
    if rank == 0 {
        common::list_checkpoints(&root.join("checkpoints"))?;
    }
    Ok(())
}
