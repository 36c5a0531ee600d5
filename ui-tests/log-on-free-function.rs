use fulgur::prelude::*;

#[log(val_loss)]
fn validation_step() -> f32 {
    0.0
}

fn main() {}
