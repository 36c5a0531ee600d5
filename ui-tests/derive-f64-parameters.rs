use fulgur::dfdx::nn::modules;
use fulgur::prelude::*;

#[derive(ModuleState)]
struct Lit<D: Backend> {
    net: modules::Linear<2, 1, f64, D>,
}

fn main() {}
