use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

#[derive(ModuleState)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
}

#[early_stopping(monitor = "val_loss")]
impl<D: Backend> LightningModule<D> for Lit<D> {
    type Batch = Tensor<Rank1<2>, f32, D>;
    type Prediction = ();

    fn training_step(&mut self, _: Self::Batch, _: Gradients<f32, D>, _: &mut StepLog) -> fulgur::Result<Loss<D>> { todo!() }

    fn configure_optimizers(&self) -> Optimizers<Self, D> { todo!() }
}

fn main() {}
