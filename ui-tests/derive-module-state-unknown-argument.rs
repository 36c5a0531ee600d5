use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

#[derive(ModuleState)]
#[module_state(bulid = Self::build)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
}

fn main() {}
