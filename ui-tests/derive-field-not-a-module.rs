use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

#[derive(ModuleState)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
    history: Vec<f32>,
}

fn main() {}
