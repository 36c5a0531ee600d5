//! What the test modules share: three modules written by hand (what the macros generate), the harness
//! that runs this binary again as a child process, and readers of what a run leaves behind.

pub mod child;
pub mod mlp;
pub mod scripted;
pub mod wide;

use std::path::Path;

use fulgur::prelude::*;

/// Every parameter of the module, bit for bit.
pub fn weight_bits<D: Backend>(m: &mlp::LitMlp<D>) -> Vec<(String, Vec<u32>)> {
    fulgur::module::state_dict(m)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.as_f32().unwrap().iter().map(|x| x.to_bits()).collect()))
        .collect()
}

/// The names of the entries of `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
