use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

struct Config {
    lr: f64,
}

#[derive(ModuleState)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
    #[hparams]
    config: Config,
}

fn main() {}
