use fulgur::dfdx::prelude::*;
use fulgur::optim::Adam;
use fulgur::prelude::*;

type X<D> = Tensor<Rank1<2>, f32, D>;

#[derive(ModuleState)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
}

#[lightning_module]
#[early_stopping(patience = 3, min_delta = 0.01)]
impl<D: Backend> Lit<D> {
    // the same module as above
    fn configure_optimizers(&self) -> Adam<D> { Adam::new(Default::default()) }

    #[log(train_loss)]
    fn training_step(&mut self, _x: X<D>, _g: Gradients<f32, D>) -> Loss<D> { todo!() }

    #[log(val_loss)]
    fn validation_step(&self, _x: X<D>) -> f32 { todo!() }
}

fn main() {}
