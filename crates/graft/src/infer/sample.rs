//! New samples from a trained generative model: codes drawn from the N(0, I) prior and run through the decoder — a
//! VAE's part after its `sampling` layer, or a GAN's generator — in inference mode, final sigmoid or tanh included
//! (pixel values, not logits).

use burn::prelude::*;

use crate::data::Array;
use crate::error::{Error, Result};
use crate::layers::value::Data;
use crate::model::Graph;
use crate::train::reconstruction::sampling_node;

/// What turns codes into samples: a VAE's decoder (the part of `model` after its `sampling` layer, reading the
/// class input too when the model is conditional), or a generator, whose input is the code (a model without a
/// `sampling` layer).
pub fn decoder(model: &Graph) -> Result<Graph> {
    match sampling_node(model) {
        Ok((node, _)) => {
            let conditions: Vec<&str> = model.spec.inputs.iter().skip(1).map(|i| i.name.as_str()).collect();
            model.after_keeping(&model.nodes[node].name, &conditions)
        }
        Err(_) if model.input_shapes().len() == 1 => Ok(model.clone()),
        Err(e) => Err(e),
    }
}

/// The number of classes a conditional model's decoder takes (its one-hot second input), or `None`.
pub fn conditional_classes(model: &Graph) -> Result<Option<usize>> {
    let decoder = decoder(model)?;
    Ok(decoder.input_shapes().get(1).map(|s| s.iter().product()))
}

/// One-hot rows `[n, k]` of `classes` on `device`.
pub fn one_hot(classes: &[usize], k: usize, device: &Device) -> Result<Data> {
    let mut values = vec![0f32; classes.len() * k];
    for (row, &c) in classes.iter().enumerate() {
        if c >= k {
            return Err(Error::new(format!("class {c} is not one of the {k} classes")));
        }
        values[row * k + c] = 1.0;
    }
    crate::layers::value::input_data(&Array::new(vec![classes.len(), k], values)?, device)
}

/// `n` samples `[n, output shape]` decoded from codes drawn from the N(0, I) prior (the device's seed decides
/// which). A conditional model decodes each code with a class: `class` for all, or the classes in turn.
pub fn sample_prior(model: &Graph, n: usize, class: Option<usize>) -> Result<Array> {
    if n == 0 {
        return Err(Error::new("--n: the number of samples must be at least 1"));
    }
    let decoder = decoder(model)?;
    let device = model.devices().first().cloned().unwrap_or_default();
    let code_shape = decoder.input_shapes().remove(0);
    let mut inputs = vec![Data::normal(n, &code_shape, &device)?];
    match (conditional_classes(model)?, class) {
        (Some(k), class) => {
            let classes: Vec<usize> = (0..n).map(|i| class.unwrap_or(i % k)).collect();
            inputs.push(one_hot(&classes, k, &device)?);
        }
        (None, Some(_)) => {
            return Err(Error::new(
                "--class picks the class of a conditional model's samples; this model is not conditional",
            ));
        }
        (None, None) => {}
    }
    let out = decoder.forward(inputs, false, false)?.remove(0).data;
    let dims = out.dims();
    let values = out
        .flatten_rows()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::new(format!("cannot read the samples back: {e:?}")))?;
    Array::new(dims, values)
}
