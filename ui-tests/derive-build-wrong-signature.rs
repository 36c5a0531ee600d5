use fulgur::dfdx::prelude::*;
use fulgur::prelude::*;

#[derive(ModuleState)]
#[module_state(build = Self::build)]
struct Lit<D: Backend> {
    net: Built<Linear<2, 1>, D>,
}

impl<D: Backend> Lit<D> {
    fn build(device: &D) -> fulgur::Result<Self> {
        Ok(Self { net: device.build_module::<Linear<2, 1>, f32>() })
    }
}

fn main() {}
