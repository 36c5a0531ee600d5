use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

type X<D> = Tensor<Rank1<2>, f32, D>;

#[derive(ModuleState)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
}

#[lightning_module]
impl<D: Backend> Default for Lit<D> {
    fn default() -> Self {
        todo!()
    }
}

fn main() {}
