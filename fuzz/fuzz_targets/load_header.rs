//! Arbitrary bytes as a whole checkpoint file, read by `read_checkpoint_header` (what `ckpt_path =
//! "last"` uses to choose among files).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| fulgur_fuzz::check_header(file));
