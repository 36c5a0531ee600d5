use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

#[derive(ModuleState)]
struct Lit<D: Backend>(Built<Linear<2, 1>, D>);

fn main() {}
