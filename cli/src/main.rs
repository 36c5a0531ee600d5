//! `fulgur`: inspect, verify and compare checkpoints, move weights to and from safetensors, plot a
//! run's metrics. `fulgur --help` lists the commands, `fulgur <command> --help` their options.
//!
//! Exit status: 0 on success; 1 when `verify` finds a damaged file or `diff` finds a difference; 2 on
//! an error (a file that cannot be read, bad arguments), with the reason on standard error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fulgur_cli::{diff, inspect, plot, verify};
use fulgur_runtime::interop::{self, ExportOptions};

#[derive(Parser)]
#[command(
    name = "fulgur",
    version,
    about = "Inspect, verify, compare, export, import and plot fulgur checkpoints and runs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What a checkpoint holds: format, counters, loop position, monitored score, hyperparameters,
    /// callback states, tensors and optimizer state.
    Inspect {
        /// The checkpoint.
        file: PathBuf,
        /// Print JSON, for programs.
        #[arg(long)]
        json: bool,
    },
    /// Whether checkpoints are intact (structure and checksums); for a directory, every `*.ckpt` in it
    /// and which is best and last. Exit status 1 when one is damaged.
    Verify {
        /// Checkpoint files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print JSON, for programs.
        #[arg(long)]
        json: bool,
    },
    /// How checkpoint B differs from A: tensors added, removed, changed (max absolute and relative L2
    /// difference), metadata. Exit status 1 when they differ.
    Diff {
        /// The first checkpoint.
        a: PathBuf,
        /// The second checkpoint.
        b: PathBuf,
        /// Print JSON, for programs.
        #[arg(long)]
        json: bool,
    },
    /// Writes a checkpoint's weights to a safetensors file that PyTorch loads
    /// (`model.load_state_dict(safetensors.torch.load_file(...))`).
    Export {
        /// The checkpoint.
        file: PathBuf,
        /// The safetensors file to write.
        #[arg(long)]
        to: PathBuf,
        /// Also export the optimizer state, as `{PREFIX}{i}.{parameter}.{slot}`.
        #[arg(long, value_name = "PREFIX")]
        optimizer_prefix: Option<String>,
    },
    /// Writes a weights-only checkpoint from a safetensors file, which `load_from_checkpoint` accepts.
    Import {
        /// The safetensors file.
        file: PathBuf,
        /// The checkpoint to write.
        #[arg(long)]
        into: PathBuf,
        /// The module's hyperparameters, as JSON (`.json`) or YAML (`.yaml`, `.yml`); default: those a
        /// `fulgur export` stored in the file.
        #[arg(long)]
        hparams: Option<PathBuf>,
    },
    /// Draws a run's metrics.csv as line charts, by step and by epoch.
    Plot {
        /// The run's directory (`lightning_logs/version_N`), its parent, or the metrics.csv itself.
        run_dir: PathBuf,
        /// The metrics to draw, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        metrics: Option<Vec<String>>,
        /// The image to write: `.svg` or `.png`.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Writes `text` to standard output. A closed pipe (`fulgur inspect … | head`) ends the output quietly,
/// as other command-line tools do; another write error is reported.
fn emit(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to standard output: {e}"))
        }
        _ => Ok(()),
    }
}

fn print_json(value: &serde_json::Value) -> Result<(), String> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    emit(&text)
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Inspect { file, json } => {
            let report = inspect::inspect(&file).map_err(|e| e.to_string())?;
            if json {
                print_json(&report.json())?;
            } else {
                emit(&report.text())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { paths, json } => {
            let report = verify::verify(&paths);
            if json {
                print_json(&report.json())?;
            } else {
                emit(&report.text())?;
            }
            Ok(if report.all_intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Diff { a, b, json } => {
            let report = diff::diff(&a, &b).map_err(|e| e.to_string())?;
            if json {
                print_json(&report.json())?;
            } else {
                emit(&report.text())?;
            }
            Ok(if report.identical() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Export {
            file,
            to,
            optimizer_prefix,
        } => {
            let done = interop::export_safetensors(&file, &to, &ExportOptions { optimizer_prefix })
                .map_err(|e| e.to_string())?;
            emit(&format!(
                "wrote {} ({} tensors, {})\n",
                to.display(),
                done.tensors,
                fulgur_runtime::human_bytes(done.bytes)
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            file,
            into,
            hparams,
        } => {
            let hparams = hparams
                .map(interop::read_hparams)
                .transpose()
                .map_err(|e| e.to_string())?;
            let done =
                interop::import_safetensors(&file, &into, hparams).map_err(|e| e.to_string())?;
            emit(&format!(
                "wrote {} ({} tensors, {}, weights only)\n",
                into.display(),
                done.tensors,
                fulgur_runtime::human_bytes(done.bytes)
            ))?;
            if !done.widened.is_empty() {
                emit(&format!(
                    "widened to f32 from half precision: {}\n",
                    done.widened.join(", ")
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plot {
            run_dir,
            metrics,
            out,
        } => {
            let csv = plot::find_metrics(&run_dir)?;
            let curves = plot::read_curves(&csv, metrics.as_deref())?;
            let title = csv
                .parent()
                .and_then(|p| p.file_name())
                .map_or("metrics".to_string(), |n| n.to_string_lossy().into_owned());
            let (w, h) = plot::plot(&curves, &out, &title)?;
            emit(&format!(
                "wrote {} ({w}x{h}, {} from {})\n",
                out.display(),
                curves.names.join(", "),
                csv.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
