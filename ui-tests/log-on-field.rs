use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

type X<D> = Tensor<Rank1<2>, f32, D>;

#[derive(ModuleState)]
struct Lit<D: Backend> {
    #[log(val_loss)]
    net: Built<Linear<2, 1>, D>,
}

fn main() {}
