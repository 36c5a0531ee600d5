//! Image layers that dfdx 0.13 offers only under its `nightly` feature: [`Conv2D`], [`ConvTranspose2D`],
//! [`MaxPool2D`], [`AvgPool2D`] and [`Flatten`], on stable Rust.
//!
//! dfdx's own versions compute their output sizes in their types (`generic_const_exprs`), which only a
//! nightly compiler accepts. These layers gather the pixels each window reads (im2col), then finish with
//! dfdx's stable operations: one matmul for a convolution, one reduction for a pool. The gather is the
//! one device-specific step ([`WindowDevice`]: plain loops on the CPU, dfdx's gather elsewhere), and
//! records its backward pass (col2im) on dfdx's tape, which does the rest. They implement dfdx's module
//! traits: they build with `build_module`, compose with dfdx's layers in tuples, and their parameters
//! (`weight`, `bias`) are named, reset, saved in checkpoints and updated by optimizers like those of
//! `Linear`.
//!
//! The names here are the builders, what a module type is written with (as dfdx's prelude exports
//! dfdx's builders); [`modules`] holds the built types with parameters.
//!
//! Shapes follow dfdx: a batch of images is `(batch, channels, height, width)`, a single image
//! `(channels, height, width)`, with `Const` channels for the convolutions. The height and width an
//! image layer outputs are `usize`: stable Rust cannot compute them in a type. [`Flatten`] turns the
//! image into a `Const` number of features, checked at run time, so that dfdx's `Linear` can follow:
//!
//! ```
//! use dfdx::prelude::*;
//! use fulgur_runtime::nn::{Conv2D, Flatten, MaxPool2D};
//!
//! // 8×8 digits: conv 3×3 (padding 1) keeps 8×8, the pool halves it to 4×4; 16 channels.
//! type Cnn = (
//!     (Conv2D<1, 16, 3, 1, 1>, ReLU, MaxPool2D<2>),
//!     (Flatten<{ 16 * 4 * 4 }>, Linear<256, 10>),
//! );
//! let dev = Cpu::default();
//! let mut net = dev.build_module::<Cnn, f32>();
//! let grads = net.alloc_grads();
//! let x: Tensor<(usize, Const<1>, Const<8>, Const<8>), f32, _> =
//!     dev.sample_normal_like(&(32, Const, Const, Const));
//! let logits = net.forward_mut(x.traced(grads));
//! let grads = logits.square().mean().backward();
//! // The convolution's kernels got their gradient through the tape.
//! assert!(grads.get(&net.0 .0.weight).as_vec().iter().any(|g| *g != 0.0));
//! ```
//!
//! Not here: grouped convolutions (the weight's shape would need `IN / GROUPS` in a type) and
//! `ConvTranspose2D`'s `output_padding`.

mod avg_pool2d;
mod conv2d;
mod conv_transpose2d;
mod device;
mod dropout;
mod flatten;
mod max_pool2d;
mod window;

#[cfg(test)]
mod reference;

pub use avg_pool2d::AvgPool2D;
pub use conv2d::builder::Conv2D;
pub use conv_transpose2d::builder::ConvTranspose2D;
pub use device::WindowDevice;
pub use dropout::{keep_mask, unresumable_layers, Dropout, DropoutOneIn, DropoutScope};
pub use flatten::Flatten;
pub use max_pool2d::MaxPool2D;

/// The built layers, with their parameters: what [`Built`](crate::module::Built) gives for the
/// builders of [`nn`](self). The pools and [`Flatten`] have no parameters and are their own builders.
pub mod modules {
    pub use super::avg_pool2d::AvgPool2D;
    pub use super::conv2d::Conv2D;
    pub use super::conv_transpose2d::ConvTranspose2D;
    pub use super::flatten::Flatten;
    pub use super::max_pool2d::MaxPool2D;
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::{AvgPool2D, Conv2D, ConvTranspose2D, Flatten, MaxPool2D};
    use crate::checkpoint::{read_checkpoint, write_checkpoint, Checkpoint};
    use crate::module::{load_state_dict, state_dict};

    // 9×9 → conv stride 2, padding 1 → 5×5 → pool 2 → 2×2 → up ×2 → 4×4 → avg 2 → 2×2, 2 channels.
    type Net = (
        (Conv2D<1, 4, 3, 2, 1>, ReLU, MaxPool2D<2>),
        (
            ConvTranspose2D<4, 2, 2, 2>,
            AvgPool2D<2>,
            Flatten<8>,
            Linear<8, 3>,
        ),
    );

    #[test]
    fn an_empty_batch_gives_an_empty_output_not_a_panic() {
        // dfdx's copying kernels index the first element of every tensor; a batch of none must not
        // reach them.
        let dev = Cpu::default();
        let net = dev.build_module::<Net, f32>();
        let x: Tensor<(usize, Const<1>, usize, usize), f32, _> = dev.zeros_like(&(0, Const, 9, 9));
        let y = net.try_forward(x.leaky_trace()).expect("an empty output");
        assert_eq!(y.shape(), &(0, Const::<3>));
    }

    #[test]
    fn parameters_are_named_and_survive_a_checkpoint_round_trip() {
        let dev = Cpu::seed_from_u64(1);
        let net = dev.build_module::<Net, f32>();
        let weights = state_dict::<_, Cpu>(&net).expect("on the cpu");
        let names: Vec<String> = weights
            .iter()
            .map(|(name, t)| format!("{name} {:?}", t.shape()))
            .collect();
        assert_eq!(
            names,
            [
                "0.0.bias [4]",
                "0.0.weight [4, 1, 3, 3]",
                "1.0.bias [2]",
                "1.0.weight [4, 2, 2, 2]",
                "1.3.bias [3]",
                "1.3.weight [3, 8]",
            ]
        );

        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("cnn.ckpt");
        let mut ckpt = Checkpoint::new("Net");
        ckpt.state_dict = weights;
        write_checkpoint(&path, &ckpt).expect("written");
        let loaded = read_checkpoint(&path).expect("read back");

        let mut fresh = Cpu::seed_from_u64(2).build_module::<Net, f32>();
        let x: Tensor<Rank4<3, 1, 9, 9>, f32, _> = dev.sample_normal();
        let before = fresh.forward(x.clone()).as_vec();
        assert_ne!(before, net.forward(x.clone()).as_vec());
        load_state_dict::<_, Cpu>(&mut fresh, &loaded.state_dict, true, &path).expect("loaded");
        assert_eq!(fresh.forward(x.clone()).as_vec(), net.forward(x).as_vec());
    }
}
