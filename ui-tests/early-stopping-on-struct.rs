use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

type X<D> = Tensor<Rank1<2>, f32, D>;

#[derive(ModuleState)]
#[early_stopping(monitor = "val_loss")]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
}

fn main() {}
