use fulgur::prelude::*;

#[derive(ModuleState)]
struct Lit {
    #[hparams]
    lr: f64,
}

fn main() {}
