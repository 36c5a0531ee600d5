use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

#[derive(ModuleState)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
    #[skip(default = 0)]
    seen: usize,
}

fn main() {}
