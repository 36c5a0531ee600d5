use fulgur::prelude::*;

#[derive(ModuleState)]
enum Lit {
    A,
}

fn main() {}
