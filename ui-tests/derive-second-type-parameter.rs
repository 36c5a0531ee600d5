use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

#[derive(ModuleState)]
struct Lit<D: Backend, T> {
    net: Built<Linear<2, 1>, D>,
    extra: T,
}

fn main() {}
