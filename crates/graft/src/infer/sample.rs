//! New samples from a trained generative model: codes drawn from the N(0, I) prior and run through the decoder — a
//! VAE's part after its `sampling` layer, or a GAN's generator — in inference mode, final sigmoid or tanh included
//! (pixel values, not logits).

use burn::prelude::*;
use burn::tensor::Distribution;

use crate::data::Array;
use crate::error::{Error, Result};
use crate::layers::value::Data;
use crate::model::Graph;
use crate::train::reconstruction::sampling_node;

/// What turns codes into samples: a VAE's decoder (the part of `model` after its `sampling` layer), or a
/// generator, whose input is the code (a model without a `sampling` layer).
pub fn decoder(model: &Graph) -> Result<Graph> {
    match sampling_node(model) {
        Ok((node, _)) => model.after(&model.nodes[node].name),
        Err(_) if model.input_shapes().len() == 1 => Ok(model.clone()),
        Err(e) => Err(e),
    }
}

/// `n` samples `[n, output shape]` decoded from codes drawn from the N(0, I) prior (the device's seed decides
/// which).
pub fn sample_prior(model: &Graph, n: usize) -> Result<Array> {
    if n == 0 {
        return Err(Error::new("--n: the number of samples must be at least 1"));
    }
    let decoder = decoder(model)?;
    let device = model.devices().first().cloned().unwrap_or_default();
    let code_shape = decoder.input_shapes().remove(0);
    let mut shape = vec![n];
    shape.extend(&code_shape);
    let codes = match shape.len() {
        2 => Data::D2(Tensor::random(
            [shape[0], shape[1]],
            Distribution::Normal(0.0, 1.0),
            &device,
        )),
        3 => Data::D3(Tensor::random(
            [shape[0], shape[1], shape[2]],
            Distribution::Normal(0.0, 1.0),
            &device,
        )),
        4 => Data::D4(Tensor::random(
            [shape[0], shape[1], shape[2], shape[3]],
            Distribution::Normal(0.0, 1.0),
            &device,
        )),
        _ => return Err(Error::new(format!("a code of shape {code_shape:?} has too many axes"))),
    };
    let out = decoder.forward(vec![codes], false, false)?.remove(0).data;
    let dims = out.dims();
    let values = match out {
        Data::D2(t) => t.into_data(),
        Data::D3(t) => t.into_data(),
        Data::D4(t) => t.into_data(),
    }
    .convert::<f32>()
    .try_into_vec::<f32>()
    .map_err(|e| Error::new(format!("cannot read the samples back: {e:?}")))?;
    Array::new(dims, values)
}
