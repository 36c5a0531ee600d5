//! Checkpoint save and load against raw file I/O of the same bytes and against safetensors.
//!
//! `cargo bench --bench checkpoint_io` measures a checkpoint of 4 × 25M f32 parameters (400 MB) with
//! criterion, then times every operation again back to back and prints medians, throughputs and
//! the ratios the format is held to: save and load at ≥ 0.9× raw `std::fs::write` / `std::fs::read`.
//! Without `--bench` (as under `cargo test --benches`) it runs once on a small checkpoint as a smoke test.
//!
//! The summary then measures saving inside `fit` (`checkpoint_io/async_save.rs`: the training stall of
//! `async_checkpointing` against a synchronous save, and the peak extra memory of
//! `Trainer::save_checkpoint`, on a 403 MB state of weights and Adam moments) and in-place loading
//! (`checkpoint_io/in_place.rs`), and ends with these lines, in this order:
//!
//! ```text
//! async stall: X.X% of a sync save
//! in-place load: X.XXx std::fs::read
//! save peak extra memory: N MB for a M MB state
//! load_from_checkpoint peak extra memory: N MB for M MB of weights
//! ```
//!
//! Like is compared with like: `write_checkpoint` replaces its file crash-safely (temporary file, fsync,
//! rename, fsync of the directory), so it is measured against the same protocol on the raw bytes, and
//! against a plain in-place `write_all` + `sync_all` for reference; `encode_checkpoint` into a buffered file
//! is the no-fsync counterpart of `std::fs::write` and of `safetensors::serialize_to_file`. Before every
//! timed operation, untimed, the files of the previous ones are fsynced so that background writeback does
//! not bleed into the next measurement. Loads read from the page cache.
//!
//! `FULGUR_BENCH_PARAMS` overrides the number of parameters (default 100M, split over 4 tensors) and
//! `FULGUR_BENCH_RUNS` the number of timed runs per operation in the summary (default 5); a criterion filter that matches
//! nothing (`cargo bench --bench checkpoint_io -- none`) runs the summary alone. `FULGUR_BENCH_ROUNDS`
//! sets the rounds of the stall measurement (default 3; each is one synchronous and one asynchronous
//! `fit` of 109 steps with 9 saves).
//! Files go to a temporary directory under `FULGUR_BENCH_DIR` when it is set (e.g. a tmpfs, to measure
//! the format's CPU cost without the disk), else under the system's temporary directory.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use fulgur::checkpoint::{
    decode_checkpoint, encode_checkpoint, read_checkpoint, write_checkpoint, Checkpoint, TensorData,
};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

#[path = "checkpoint_io/async_save.rs"]
mod async_save;
#[path = "checkpoint_io/in_place.rs"]
mod in_place;

const TENSORS: usize = 4;
const RUNS: usize = 5;
/// Rounds (one synchronous and one asynchronous `fit`) of the stall measurement.
const STALL_ROUNDS: usize = 3;

type Op<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let params = std::env::var("FULGUR_BENCH_PARAMS")
        .ok()
        .and_then(|p| p.parse::<usize>().ok());
    let per_tensor =
        params.unwrap_or(if bench_mode { 100_000_000 } else { 400_000 }) / TENSORS / 1000 * 1000;
    let ckpt = checkpoint(per_tensor);
    let dir = match std::env::var_os("FULGUR_BENCH_DIR") {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("a temporary directory");
    let ours = dir.path().join("ours.ckpt");
    // Loads read a file that no save replaces, so that no save frees pages a load just used.
    let loaded = dir.path().join("loaded.ckpt");
    let ours_plain = dir.path().join("ours-no-fsync.ckpt");
    let raw = dir.path().join("raw.bin");
    let raw_synced = dir.path().join("raw-fsync.bin");
    let st = dir.path().join("model.safetensors");
    let raw_atomic = dir.path().join("raw-atomic.bin");
    let raw_tmp = dir.path().join(".raw-atomic.bin.tmp");
    let settle = || settle(dir.path());

    // The raw baselines write and read exactly the bytes of our file.
    let mut file_bytes = Vec::new();
    encode_checkpoint(&mut file_bytes, &ckpt, &ours).expect("encode");
    write_checkpoint(&loaded, &ckpt).expect("write");
    let bytes = file_bytes.len() as u64;

    let save_ours = || {
        let file = File::create(&ours_plain).expect("create");
        encode_checkpoint(BufWriter::with_capacity(1 << 20, file), &ckpt, &ours_plain)
            .expect("save");
    };
    let save_raw = || std::fs::write(&raw, &file_bytes).expect("write");
    let save_st = || save_safetensors(&ckpt, &st);
    let save_ours_fsync = || write_checkpoint(&ours, &ckpt).expect("save");
    let save_raw_fsync = || {
        let mut file = File::create(&raw_synced).expect("create");
        file.write_all(&file_bytes).expect("write");
        file.sync_all().expect("fsync");
    };
    let save_raw_atomic = || {
        let mut file = File::create(&raw_tmp).expect("create");
        file.write_all(&file_bytes).expect("write");
        file.sync_all().expect("fsync");
        drop(file);
        std::fs::rename(&raw_tmp, &raw_atomic).expect("rename");
        File::open(dir.path())
            .and_then(|d| d.sync_all())
            .expect("fsync directory");
    };
    let load_ours = || drop(black_box(read_checkpoint(&loaded).expect("load")));
    let load_raw = || drop(black_box(std::fs::read(&loaded).expect("read")));
    let load_st = || load_safetensors(&st);
    let encode_cpu = || encode_checkpoint(std::io::sink(), &ckpt, &ours).expect("encode");
    let decode_cpu = || {
        drop(black_box(
            decode_checkpoint(&file_bytes[..], bytes, &ours).expect("decode"),
        ))
    };
    save_st();

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut groups: [(&str, Vec<Op>); 3] = [
        (
            "save",
            vec![
                ("ours encode_checkpoint", Box::new(save_ours)),
                ("raw std::fs::write", Box::new(save_raw)),
                ("safetensors serialize_to_file", Box::new(save_st)),
            ],
        ),
        (
            "save_fsync",
            vec![
                ("ours write_checkpoint", Box::new(save_ours_fsync)),
                (
                    "raw tmp, fsync, rename, fsync dir",
                    Box::new(save_raw_atomic),
                ),
                (
                    "raw in place write_all + sync_all",
                    Box::new(save_raw_fsync),
                ),
            ],
        ),
        (
            "load",
            vec![
                ("ours read_checkpoint", Box::new(load_ours)),
                ("raw std::fs::read", Box::new(load_raw)),
                ("safetensors read + deserialize", Box::new(load_st)),
            ],
        ),
    ];
    for (name, ops) in &mut groups {
        let mut group = c.benchmark_group(*name);
        group
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Bytes(bytes));
        for (label, op) in ops.iter_mut() {
            group.bench_function(*label, |b| {
                b.iter_batched(settle, |()| op(), BatchSize::PerIteration)
            });
        }
        group.finish();
    }
    c.final_summary();

    // Medians of runs timed here, in the same process and just after criterion. Each operation runs
    // back to back after one untimed run, as in criterion: interleaving them made each pay for the
    // deferred disk work of its predecessor on the machine this was written on (±40% per position).
    let [(_, save), (_, save_fsync), (_, load)] = groups;
    let mut ops: Vec<Op> = save.into_iter().chain(save_fsync).chain(load).collect();
    ops.push(("cpu: encode_checkpoint into io::sink", Box::new(encode_cpu)));
    ops.push(("cpu: decode_checkpoint from memory", Box::new(decode_cpu)));
    let runs = match std::env::var("FULGUR_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        Some(runs) if bench_mode => runs,
        _ if bench_mode => RUNS,
        _ => 1,
    };
    let times: Vec<Vec<f64>> = ops
        .iter_mut()
        .map(|(_, op)| {
            settle();
            op();
            (0..runs)
                .map(|_| {
                    settle();
                    let start = Instant::now();
                    op();
                    start.elapsed().as_secs_f64()
                })
                .collect()
        })
        .collect();
    let medians: Vec<f64> = times.iter().cloned().map(median).collect();
    let mb = bytes as f64 / 1e6;
    let params = TENSORS * per_tensor;
    println!("\ncheckpoint I/O: {TENSORS} f32 tensors, {params} parameters, {mb:.1} MB file; medians of {runs} runs after one untimed run");
    println!(
        "{:<42} {:>9} {:>7}   every run, ms",
        "operation", "median ms", "MB/s"
    );
    for (((label, _), m), t) in ops.iter().zip(&medians).zip(&times) {
        let all: Vec<String> = t.iter().map(|x| format!("{:.0}", x * 1e3)).collect();
        println!(
            "{label:<42} {:>9.1} {:>7.0}   {}",
            m * 1e3,
            mb / m,
            all.join(" ")
        );
    }
    let median_of = |label: &str| {
        medians[ops
            .iter()
            .position(|(l, _)| *l == label)
            .expect("an operation")]
    };
    println!("\nthroughput ratios (ours / baseline; target >= 0.90 against raw)");
    for (what, ours, baseline) in [
        (
            "save, no fsync",
            "ours encode_checkpoint",
            "raw std::fs::write",
        ),
        (
            "save, fsync",
            "ours write_checkpoint",
            "raw tmp, fsync, rename, fsync dir",
        ),
        (
            "save, fsync",
            "ours write_checkpoint",
            "raw in place write_all + sync_all",
        ),
        ("load", "ours read_checkpoint", "raw std::fs::read"),
        (
            "save, no fsync",
            "ours encode_checkpoint",
            "safetensors serialize_to_file",
        ),
        (
            "load",
            "ours read_checkpoint",
            "safetensors read + deserialize",
        ),
    ] {
        let r = median_of(baseline) / median_of(ours);
        println!("  {what:<15} ours / {baseline:<36} {r:.2}");
    }
    // Saving inside `fit`, and what loads cost: the summary lines end the output, in this order.
    let rounds = if bench_mode {
        std::env::var("FULGUR_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(STALL_ROUNDS)
    } else {
        1
    };
    let (stall, memory) = async_save::run(dir.path(), bench_mode, rounds);
    let mut in_place = in_place::run(dir.path(), params, runs);
    let summary = |lines: &mut Vec<String>, is: &dyn Fn(&str) -> bool, or: String| match lines
        .iter()
        .rposition(|l| is(l))
    {
        Some(i) => lines.remove(i),
        None => or,
    };
    let in_place_summary = summary(
        &mut in_place,
        &|l| l.starts_with("in-place load: ") && l.ends_with("x std::fs::read"),
        "in-place load: n/a".into(),
    );
    let load_memory = summary(
        &mut in_place,
        &|l| l.starts_with("load_from_checkpoint peak extra memory: "),
        "load_from_checkpoint peak extra memory: n/a".into(),
    );
    let (stall_summary, stall_detail) = stall.split_last().expect("stall lines");
    let (memory_summary, memory_detail) = memory.split_last().expect("memory lines");
    for line in stall_detail.iter().chain(memory_detail) {
        println!("{line}");
    }
    println!();
    for line in &in_place {
        println!("{line}");
    }
    println!();
    println!("{stall_summary}");
    println!("{in_place_summary}");
    println!("{memory_summary}");
    println!("{load_memory}");
}

/// `TENSORS` f32 tensors of `per_tensor` values each, in the state dict of an otherwise full checkpoint.
fn checkpoint(per_tensor: usize) -> Checkpoint {
    let mut ckpt = Checkpoint::new("bench::Net");
    ckpt.epoch = 1;
    ckpt.global_step = 1000;
    for t in 0..TENSORS {
        let values = (0..per_tensor)
            .map(|i| (i % 1013) as f32 * 0.001 - t as f32)
            .collect();
        ckpt.state_dict.insert(
            format!("layers.{t}.weight"),
            TensorData::from_f32(vec![per_tensor / 1000, 1000], values),
        );
    }
    ckpt
}

fn save_safetensors(ckpt: &Checkpoint, path: &Path) {
    let bytes: Vec<_> = ckpt
        .state_dict
        .iter()
        .map(|(name, t)| (name, t.shape().to_vec(), t.le_bytes()))
        .collect();
    let views = bytes.iter().map(|(name, shape, data)| {
        (
            name.as_str(),
            TensorView::new(Dtype::F32, shape.clone(), data).expect("view"),
        )
    });
    safetensors::serialize_to_file(views, &None, path).expect("safetensors save");
}

fn load_safetensors(path: &Path) {
    let buffer = std::fs::read(path).expect("read");
    let tensors = SafeTensors::deserialize(&buffer).expect("safetensors load");
    for (name, view) in tensors.iter() {
        black_box((name, view.shape(), view.data().len()));
    }
    drop(black_box(buffer));
}

/// Flushes what earlier operations left dirty, so that it is not written back during the next one.
fn settle(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        File::open(entry.path())
            .and_then(|f| f.sync_all())
            .expect("fsync");
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync directory");
}

/// The median (the upper one of an even count; NaN for none).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Gives the memory the allocator holds free back to the system (glibc), so that the next operation
/// allocates fresh pages as it would in a process that had not just freed as much.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's `malloc_trim` only returns free memory to the system.
        unsafe { malloc_trim(0) };
    }
}

/// The resident memory before `f` runs and its peak while `f` runs, in bytes; `None` where `/proc/self`
/// cannot tell (not Linux). Memory the allocator holds free is given back first ([`trim`]), so that
/// what `f` allocates shows as new pages instead of reusing pages earlier work left resident.
fn peak_during(f: impl FnOnce()) -> Option<(u64, u64)> {
    let status = |field: &str| -> Option<u64> {
        let text = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = text.lines().find(|l| l.starts_with(field))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    trim();
    // Resets VmHWM to the current resident size.
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    let before = status("VmRSS:")?;
    f();
    Some((before, status("VmHWM:")?))
}
