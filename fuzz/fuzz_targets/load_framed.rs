//! Arbitrary bytes as a checkpoint's payload, framed with a valid magic and trailer and with tensor
//! checksums fixed, so that every input reaches the structure parser and well-formed ones decode.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| fulgur_fuzz::check_decode(&fulgur_fuzz::frame(payload)));
