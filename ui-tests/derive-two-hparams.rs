use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

#[derive(ModuleState)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
    #[hparams]
    lr: f64,
    #[hparams]
    seed: u64,
}

fn main() {}
