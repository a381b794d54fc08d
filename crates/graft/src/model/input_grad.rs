//! The gradient of a model's output with respect to its input, as a tensor that is itself differentiable with
//! respect to the model's parameters. WGAN-GP trains its critic on the norm of this gradient, which needs the
//! derivative of a derivative; burn's autodiff has no double backward, so the backward pass of the critic is
//! written here with ordinary tensor operations (a dense layer's input gradient is a matrix product with its
//! weight, a convolution's a transposed convolution with the same weight, an activation's a product with its
//! derivative at the stored pre-activation), and burn's autodiff differentiates that once more. It covers the
//! layers critics are made of, in a chain: dense and convolutions with their fused activations, activation layers,
//! flatten and reshape, dropout at inference, global average pooling.

use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

use crate::error::{Context, Error, Result};
use crate::layers::activation::{Activation, ActivationFn};
use crate::layers::value::Data;
use crate::layers::{Layer, LayerSpec};
use crate::model::Graph;
use crate::model::graph::Source;

/// The kinds [`Graph::input_gradient`] differentiates through.
const SUPPORTED: &str = "dense, conv1d, conv2d, relu, leaky_relu, elu, tanh, sigmoid, gelu, linear, activation, \
                         flatten, reshape, dropout (inference), global_avg_pool1d, global_avg_pool2d";

/// What the backward pass of one node needs from its forward pass.
struct Saved {
    /// The node's input.
    input: Data,
    /// The pre-activation of a layer with an activation (dense, convolutions, activation layers).
    pre: Option<Data>,
}

/// d act(z) / dz at `z`, element-wise.
fn derivative<const D: usize>(f: ActivationFn, z: Tensor<D>) -> Result<Tensor<D>> {
    Ok(match f {
        ActivationFn::Plain(Activation::Linear) => z.ones_like(),
        ActivationFn::Plain(Activation::Relu) => z.greater_elem(0.0).float(),
        ActivationFn::Plain(Activation::LeakyRelu) => leaky(z, 0.01),
        ActivationFn::LeakyRelu(alpha) => leaky(z, alpha),
        ActivationFn::Plain(Activation::Elu) => elu(z, 1.0),
        ActivationFn::Elu(alpha) => elu(z, alpha),
        ActivationFn::Plain(Activation::Tanh) => {
            let t = z.tanh();
            t.clone().mul(t).neg().add_scalar(1.0)
        }
        ActivationFn::Plain(Activation::Sigmoid) => {
            let s = burn::tensor::activation::sigmoid(z);
            s.clone().mul(s.neg().add_scalar(1.0))
        }
        ActivationFn::Plain(Activation::Gelu) => {
            // d/dz z·Φ(z) = Φ(z) + z·φ(z).
            let cdf = z
                .clone()
                .div_scalar(std::f64::consts::SQRT_2)
                .erf()
                .add_scalar(1.0)
                .mul_scalar(0.5);
            let pdf = z
                .clone()
                .powi_scalar(2)
                .mul_scalar(-0.5)
                .exp()
                .mul_scalar(1.0 / (2.0 * std::f64::consts::PI).sqrt());
            cdf + z * pdf
        }
        other => {
            return Err(Error::new(format!(
                "the gradient penalty cannot differentiate through the activation {other:?}; supported: linear, \
                 relu, leaky_relu, elu, tanh, sigmoid, gelu"
            )));
        }
    })
}

fn leaky<const D: usize>(z: Tensor<D>, alpha: f64) -> Tensor<D> {
    let positive = z.clone().greater_elem(0.0);
    z.ones_like().mul_scalar(alpha).mask_fill(positive, 1.0)
}

fn elu<const D: usize>(z: Tensor<D>, alpha: f64) -> Tensor<D> {
    let positive = z.clone().greater_elem(0.0);
    let negative_side = z.clone().exp().mul_scalar(alpha);
    negative_side.mask_fill(positive, 1.0)
}

fn activation_grad(f: ActivationFn, pre: Data, grad: Data) -> Result<Data> {
    Ok(match (pre, grad) {
        (Data::D2(z), Data::D2(g)) => Data::D2(g * derivative(f, z)?),
        (Data::D3(z), Data::D3(g)) => Data::D3(g * derivative(f, z)?),
        (Data::D4(z), Data::D4(g)) => Data::D4(g * derivative(f, z)?),
        _ => return Err(Error::new("the gradient and the pre-activation differ in rank")),
    })
}

/// The input gradient of a convolution with `options` and weight `w` (`[out, in/groups, k…]`) at an input of
/// spatial size `input`: a transposed convolution of `grad` with the same weight, run unpadded and then cut to the
/// input (which also covers asymmetric padding).
fn conv_input_grad_2d(grad: Tensor<4>, w: Tensor<4>, options: &ConvOptions<2>, input: [usize; 2]) -> Tensor<4> {
    let [_, _, kh, kw] = w.dims();
    let out = [grad.dims()[2], grad.dims()[3]];
    let kernel = [kh, kw];
    let extra: [usize; 2] = std::array::from_fn(|i| {
        let padded = input[i] + options.padding[i].0 + options.padding[i].1;
        padded - ((out[i] - 1) * options.stride[i] + options.dilation[i] * (kernel[i] - 1) + 1)
    });
    let full = burn::tensor::module::conv_transpose2d(
        grad,
        w,
        None,
        ConvTransposeOptions::new(options.stride, [0, 0], extra, options.dilation, options.groups),
    );
    let [b, c, _, _] = full.dims();
    let (top, left) = (options.padding[0].0, options.padding[1].0);
    full.slice([0..b, 0..c, top..top + input[0], left..left + input[1]])
}

fn conv_input_grad_1d(grad: Tensor<3>, w: Tensor<3>, options: &ConvOptions<1>, input: usize) -> Tensor<3> {
    let k = w.dims()[2];
    let out = grad.dims()[2];
    let padded = input + options.padding[0].0 + options.padding[0].1;
    let extra = padded - ((out - 1) * options.stride[0] + options.dilation[0] * (k - 1) + 1);
    let full = burn::tensor::module::conv_transpose1d(
        grad,
        w,
        None,
        ConvTransposeOptions::new(options.stride, [0], [extra], options.dilation, options.groups),
    );
    let [b, c, _] = full.dims();
    let start = options.padding[0].0;
    full.slice([0..b, 0..c, start..start + input])
}

impl Graph {
    /// ∂(Σ over the batch of the output)/∂input for a model with one input and one output of one value per sample
    /// (a critic), the same shape as `input`, built from differentiable tensor operations: backpropagating a
    /// function of it (WGAN-GP's penalty) reaches every parameter. `training` is the mode of the forward pass.
    /// A layer kind outside those listed in the module's documentation is an error naming the layer.
    pub fn input_gradient(&self, input: Data, training: bool) -> Result<Data> {
        if self.spec.inputs.len() != 1 || self.outputs.len() != 1 || self.output_shapes()[0] != [1] {
            return Err(Error::new(format!(
                "the input gradient is taken of a model with one input and one score per sample (output [1]); this \
                 one has {} input(s) and outputs {:?}",
                self.spec.inputs.len(),
                self.output_shapes()
            )));
        }
        // A chain: node i reads node i − 1 (node 0 the input) and owns its layer; the last node is the output.
        for (i, node) in self.nodes.iter().enumerate() {
            let expected = if i == 0 {
                Source::Input(0)
            } else {
                Source::Node(i - 1, 0)
            };
            if node.sources != [expected] || node.layer_of != i {
                return Err(Error::new(
                    "the gradient penalty differentiates critics that are a chain of layers (each reading the one \
                     before, no shared layers)",
                )
                .at(format!("layer '{}'", node.name)));
            }
        }
        if self.outputs != [Source::Node(self.nodes.len() - 1, 0)] {
            return Err(Error::new("the critic's output must be its last layer"));
        }
        let mut saved = Vec::with_capacity(self.nodes.len());
        let mut x = input;
        for node in &self.nodes {
            let at = || format!("layer '{}'", node.name);
            let layer = node
                .layer
                .as_ref()
                .ok_or_else(|| Error::new("layer missing"))
                .at_with(at)?;
            let (pre, out) = forward(layer, &node.spec, x.clone(), training).at_with(at)?;
            saved.push(Saved { input: x, pre });
            x = out;
        }
        let mut grad = crate::map_data!(x, |t| t.ones_like());
        for (node, s) in self.nodes.iter().zip(saved).rev() {
            let at = || format!("layer '{}'", node.name);
            let layer = node
                .layer
                .as_ref()
                .ok_or_else(|| Error::new("layer missing"))
                .at_with(at)?;
            grad = backward(layer, s, grad).at_with(at)?;
        }
        Ok(grad)
    }
}

/// One layer's forward pass: (its pre-activation when it has an activation, its output).
fn forward(layer: &Layer, spec: &LayerSpec, x: Data, training: bool) -> Result<(Option<Data>, Data)> {
    Ok(match layer {
        Layer::Dense(d) => {
            let z = burn::tensor::module::linear(
                x.d2().map_err(|_| dense_rank())?,
                d.weight.val().transpose(),
                d.bias.as_ref().map(|b| b.val()),
            );
            let a = d.activation.apply(z.clone());
            (Some(Data::D2(z)), Data::D2(a))
        }
        Layer::Conv2d(c) => {
            let z = burn::tensor::module::conv2d(
                x.d4()?,
                c.weight.val(),
                c.bias.as_ref().map(|b| b.val()),
                c.options.clone(),
            );
            let a = c.activation.apply(z.clone());
            (Some(Data::D4(z)), Data::D4(a))
        }
        Layer::Conv1d(c) => {
            let z = burn::tensor::module::conv1d(
                x.d3()?.swap_dims(1, 2),
                c.weight.val(),
                c.bias.as_ref().map(|b| b.val()),
                c.options.clone(),
            )
            .swap_dims(1, 2);
            let a = c.activation.apply(z.clone());
            (Some(Data::D3(z)), Data::D3(a))
        }
        Layer::Activation(f) => {
            let out = crate::map_data!(x.clone(), |t| f.apply(t));
            (Some(x), out)
        }
        Layer::Reshape(shape) => {
            let mut dims = vec![x.dims()[0]];
            dims.extend(shape);
            (None, x.reshape(&dims)?)
        }
        Layer::Dropout(rate) => {
            if training && *rate > 0.0 {
                return Err(Error::new(
                    "a critic with dropout has a random input gradient; the gradient penalty needs a critic without \
                     dropout",
                ));
            }
            (None, x)
        }
        Layer::GlobalPool(_) if matches!(spec, LayerSpec::GlobalAvgPool1d(_) | LayerSpec::GlobalAvgPool2d(_)) => {
            let out = match x {
                Data::D4(t) => Data::D2(t.mean_dim(3).mean_dim(2).flatten(1, 3)),
                Data::D3(t) => Data::D2(t.mean_dim(1).flatten(1, 2)),
                Data::D2(_) => return Err(Error::new("global pooling takes sequences or images")),
            };
            (None, out)
        }
        _ => {
            return Err(Error::new(format!(
                "the gradient penalty cannot differentiate through a {} layer; critics may use {SUPPORTED}",
                spec.kind()
            )));
        }
    })
}

fn dense_rank() -> Error {
    Error::new("the gradient penalty differentiates dense layers on vectors ([batch, features]); flatten first")
}

/// One layer's backward pass: the gradient at its input from the gradient at its output.
fn backward(layer: &Layer, saved: Saved, grad: Data) -> Result<Data> {
    let Saved { input, pre } = saved;
    let at_pre = |f: ActivationFn, grad: Data| -> Result<Data> {
        match &pre {
            Some(z) => activation_grad(f, z.clone(), grad),
            None => Ok(grad),
        }
    };
    Ok(match layer {
        Layer::Dense(d) => {
            let g = at_pre(ActivationFn::Plain(d.activation), grad)?.d2()?;
            Data::D2(g.matmul(d.weight.val()))
        }
        Layer::Conv2d(c) => {
            let g = at_pre(ActivationFn::Plain(c.activation), grad)?.d4()?;
            let dims = input.dims();
            Data::D4(conv_input_grad_2d(g, c.weight.val(), &c.options, [dims[2], dims[3]]))
        }
        Layer::Conv1d(c) => {
            let g = at_pre(ActivationFn::Plain(c.activation), grad)?.d3()?;
            let length = input.dims()[1];
            Data::D3(conv_input_grad_1d(g.swap_dims(1, 2), c.weight.val(), &c.options, length).swap_dims(1, 2))
        }
        Layer::Activation(f) => at_pre(*f, grad)?,
        Layer::Reshape(_) => grad.reshape(&input.dims())?,
        Layer::Dropout(_) => grad,
        Layer::GlobalPool(_) => {
            let g = grad.d2()?;
            match input {
                Data::D4(t) => {
                    let [b, c, h, w] = t.dims();
                    Data::D4(g.reshape([b, c, 1, 1]).expand([b, c, h, w]).div_scalar((h * w) as f64))
                }
                Data::D3(t) => {
                    let [b, l, c] = t.dims();
                    Data::D3(g.reshape([b, 1, c]).expand([b, l, c]).div_scalar(l as f64))
                }
                Data::D2(_) => return Err(Error::new("global pooling takes sequences or images")),
            }
        }
        _ => return Err(Error::new("no backward pass for this layer")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::value::input_data;
    use crate::model::ModelSpec;

    fn critic(toml_layers: &str, input: Vec<usize>) -> ModelSpec {
        let text = format!("input = {input:?}\nlayers = {toml_layers}");
        let value: toml::Value = toml::from_str(&text).unwrap();
        ModelSpec::from_toml(&value, "model").unwrap()
    }

    fn values(d: Data) -> Vec<f32> {
        d.flatten_rows()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    }

    /// The explicit input gradient equals burn's own first-order gradient of Σ output w.r.t. the input.
    fn check_against_autodiff(spec: &ModelSpec, shape: &[usize]) {
        let device = Device::default().autodiff();
        device.seed(3);
        let graph = Graph::build(spec, &device).unwrap();
        let n = 3;
        let size: usize = shape.iter().product();
        let raw: Vec<f32> = (0..n * size).map(|i| ((i * 37 % 23) as f32 / 11.5) - 1.0).collect();
        let array = crate::data::Array::new(std::iter::once(n).chain(shape.iter().copied()).collect(), raw).unwrap();
        let x = input_data(&array, &device).unwrap();
        let explicit = values(graph.input_gradient(x.clone(), false).unwrap());
        let leaf = x.flatten_rows().require_grad();
        let dims: Vec<usize> = std::iter::once(n).chain(shape.iter().copied()).collect();
        let out = graph
            .forward(vec![Data::D2(leaf.clone()).reshape(&dims).unwrap()], false, false)
            .unwrap()
            .remove(0)
            .data
            .flatten_rows();
        let grads = out.sum().backward();
        let reference = leaf.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(explicit.len(), reference.len());
        for (i, (a, b)) in explicit.iter().zip(&reference).enumerate() {
            assert!(
                (a - b).abs() < 1e-5 * (1.0 + b.abs()),
                "element {i}: {a} vs autodiff {b}"
            );
        }
    }

    #[test]
    fn matches_autodiff_for_an_mlp_and_a_strided_cnn() {
        check_against_autodiff(
            &critic(
                "[{ dense = { units = 6, activation = \"tanh\" } }, { leaky_relu = { alpha = 0.2 } }, \
                 { dense = { units = 5, activation = \"gelu\" } }, { dense = { units = 1, activation = \"sigmoid\" } }]",
                vec![4],
            ),
            &[4],
        );
        check_against_autodiff(
            &critic(
                "[{ conv2d = { filters = 3, kernel = 3, stride = 2, padding = 1 } }, { leaky_relu = { alpha = 0.2 } }, \
                 { conv2d = { filters = 4, kernel = 2, padding = \"same\", activation = \"elu\" } }, \
                 { flatten = {} }, { dense = { units = 1 } }]",
                vec![2, 7, 6],
            ),
            &[2, 7, 6],
        );
        check_against_autodiff(
            &critic(
                "[{ conv1d = { filters = 3, kernel = 3, stride = 2, dilation = 1, activation = \"relu\" } }, \
                 { global_avg_pool1d = {} }, { dense = { units = 1 } }]",
                vec![9, 2],
            ),
            &[9, 2],
        );
    }

    #[test]
    fn the_penalty_reaches_the_weights() {
        let device = Device::default().autodiff();
        device.seed(5);
        let spec = critic(
            "[{ conv2d = { filters = 2, kernel = 3, padding = 1 } }, { leaky_relu = { alpha = 0.2 } }, { flatten = {} }, \
             { dense = { units = 1 } }]",
            vec![1, 4, 4],
        );
        let graph = Graph::build(&spec, &device).unwrap();
        let x = Data::normal(3, &[1, 4, 4], &device).unwrap();
        let g = graph.input_gradient(x, true).unwrap().flatten_rows();
        let penalty = g.powi_scalar(2).sum_dim(1).sqrt().sub_scalar(1.0).powi_scalar(2).mean();
        let grads = penalty.backward();
        let nonzero = |v: Vec<f32>| v.iter().any(|x| *x != 0.0);
        let (Some(Layer::Conv2d(c)), Some(Layer::Dense(d))) = (&graph.nodes[0].layer, &graph.nodes[3].layer) else {
            panic!("unexpected layers")
        };
        let conv = c
            .weight
            .val()
            .grad(&grads)
            .expect("a gradient for the convolution's weight");
        assert!(nonzero(conv.into_data().try_to_vec::<f32>().unwrap()));
        let dense = d.weight.val().grad(&grads).expect("a gradient for the dense weight");
        assert!(nonzero(dense.into_data().try_to_vec::<f32>().unwrap()));
    }

    #[test]
    fn unsupported_layers_are_named() {
        let device = Device::default().autodiff();
        let spec = critic(
            "[{ dense = { units = 3 } }, { layer_norm = {} }, { dense = { units = 1 } }]",
            vec![4],
        );
        let graph = Graph::build(&spec, &device).unwrap();
        let e = graph
            .input_gradient(Data::normal(2, &[4], &device).unwrap(), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer_norm") && e.contains("dense, conv1d"), "{e}");
        let spec = critic("[{ dense = { units = 2 } }]", vec![4]);
        let e = Graph::build(&spec, &device)
            .unwrap()
            .input_gradient(Data::normal(2, &[4], &device).unwrap(), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("output [1]"), "{e}");
    }
}
