use fulgur::dfdx::prelude::*;
use fulgur::optim::{Adam, ManualOptimization};
use fulgur::prelude::*;

type X<D> = Tensor<Rank1<2>, f32, D>;

#[derive(ModuleState)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
}

#[lightning_module(manual_optimisation)]
impl<D: Backend> Lit<D> {
    fn configure_optimizers(&self) -> Adam<D> { Adam::new(Default::default()) }

    #[log(train_loss)]
    fn training_step(&mut self, _x: X<D>, _opt: &mut ManualOptimization<'_, Self, D>) -> f32 { todo!() }
}

fn main() {}
