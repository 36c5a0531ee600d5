use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

struct History;

#[derive(ModuleState)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
    history: History,
}

fn main() {}
