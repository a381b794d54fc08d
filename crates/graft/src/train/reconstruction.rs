//! Training a model to give back its input: autoencoders (denoising ones see Gaussian noise on their training
//! inputs and learn to return the clean ones) and variational autoencoders, whose loss is the negative ELBO:
//! reconstruction (the loss summed over a sample's elements — for `binary_crossentropy` exactly the Bernoulli
//! negative log-likelihood) plus β times the KL divergence of the approximate posterior from the N(0, I) prior.
//! The posterior's mean and log-variance are the two inputs of the model's one `sampling` layer, read from the
//! same forward pass. Both are a [`TrainStep`] run by the same [`Trainer`](crate::train::Trainer) loop as
//! supervised training.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::data::{Batch, Dataset, gather};
use crate::error::{Context, Error, Result};
use crate::layers::value::{Data, batch_inputs};
use crate::layers::{Ctx, LayerSpec};
use crate::model::Graph;
use crate::model::graph::Source;
use crate::task::loss::{LossSpec, Target};
use crate::train::callbacks::Logs;
use crate::train::config::FitConfig;
use crate::train::step::{Resampler, TrainStep};
use crate::train::trainer::{EVAL_BATCH, optimizer_step};

/// What a reconstruction model trains for.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconstructionConfig {
    /// Between the output and the (clean) input: `mse`, `mae`, `huber` or `binary_crossentropy` (inputs in [0, 1]).
    pub loss: LossSpec,
    /// Standard deviation of the Gaussian noise added to training inputs (0: a plain autoencoder).
    pub noise: f64,
    /// `Some(β)`: a variational autoencoder with this weight on the KL term (1 is the ELBO, β > 1 a β-VAE).
    pub beta: Option<f64>,
    /// `Some(K)`: a conditional model, whose second input is the one-hot class of each example among `K`.
    pub classes: Option<usize>,
}

impl ReconstructionConfig {
    pub fn autoencoder(loss: LossSpec) -> Self {
        ReconstructionConfig {
            loss,
            noise: 0.0,
            beta: None,
            classes: None,
        }
    }

    pub fn vae(loss: LossSpec, beta: f64) -> Self {
        ReconstructionConfig {
            loss,
            noise: 0.0,
            beta: Some(beta),
            classes: None,
        }
    }

    pub fn with_noise(mut self, noise: f64) -> Self {
        self.noise = noise;
        self
    }

    /// Conditioned on the class, one of `classes`, given to the model as a one-hot second input.
    pub fn conditional(mut self, classes: usize) -> Self {
        self.classes = Some(classes);
        self
    }

    fn check(&self) -> Result<()> {
        if !matches!(
            self.loss,
            LossSpec::Mse | LossSpec::Mae | LossSpec::Huber { .. } | LossSpec::BinaryCrossentropy { pos_weight: None }
        ) {
            return Err(Error::new(format!(
                "a reconstruction is scored by mse, mae, huber or binary_crossentropy (inputs in [0, 1]), not {:?}",
                self.loss
            ))
            .at("train.loss"));
        }
        if !(self.noise >= 0.0 && self.noise.is_finite()) {
            return Err(Error::new(format!("must be at least 0, found {}", self.noise)).at("noise"));
        }
        if let Some(beta) = self.beta
            && !(beta >= 0.0 && beta.is_finite())
        {
            return Err(Error::new(format!("must be at least 0, found {beta}")).at("beta"));
        }
        Ok(())
    }
}

/// The VAE's `sampling` node in `model`: its index and its (mean, log-variance) sources.
pub fn sampling_node(model: &Graph) -> Result<(usize, [Source; 2])> {
    let found: Vec<usize> = (0..model.nodes.len())
        .filter(|&i| matches!(model.nodes[i].spec, LayerSpec::Sampling(_)))
        .collect();
    match found.as_slice() {
        [i] => Ok((*i, [model.nodes[*i].sources[0], model.nodes[*i].sources[1]])),
        [] => Err(Error::new(
            "a VAE draws its code with a `sampling` layer, from = [\"mean\", \"log_var\"]; the model has none",
        )
        .at("model")),
        _ => Err(Error::new(format!("a VAE has one `sampling` layer; the model has {}", found.len())).at("model")),
    }
}

/// Checks that `model` can be trained to reconstruct its input: one input, one output of the input's shape, and
/// for a VAE one `sampling` layer.
pub fn check_model(model: &Graph, config: &ReconstructionConfig) -> Result<()> {
    config.check()?;
    let (inputs, outputs) = (model.input_shapes(), model.output_shapes());
    let wanted = 1 + usize::from(config.classes.is_some());
    if inputs.len() != wanted || outputs.len() != 1 {
        return Err(Error::new(format!(
            "a{} reconstruction model has {wanted} input{} and one output; this one has {} and {}",
            if wanted == 2 { " conditional" } else { "" },
            if wanted == 2 {
                "s (the data, then the one-hot class)"
            } else {
                ""
            },
            inputs.len(),
            outputs.len()
        ))
        .at("model"));
    }
    if let Some(k) = config.classes
        && inputs[1] != [k]
    {
        return Err(Error::new(format!(
            "the second input '{}' is the one-hot class: it must have shape [{k}] for the data's {k} classes, not {:?}",
            model.spec.inputs[1].name, inputs[1]
        ))
        .at("model"));
    }
    if inputs[0] != outputs[0] {
        return Err(Error::new(format!(
            "the output has shape {:?} but the input {:?}; an autoencoder's output reconstructs its input, so \
             the shapes must be equal (end the decoder in a layer of the input's size, and a reshape if needed)",
            outputs[0], inputs[0]
        ))
        .at("model"));
    }
    if config.beta.is_some() {
        sampling_node(model)?;
    }
    Ok(())
}

/// The terms of one batch's loss, as tensors (for the gradient) and per row (for scores).
struct Terms {
    /// The loss to minimize: the mean reconstruction loss (autoencoder) or the negative ELBO (VAE).
    loss: Tensor<1>,
    /// Per row: the loss averaged over the row's elements (the anomaly score).
    per_row: Tensor<1>,
    /// VAE only: the mean over rows of the reconstruction summed over elements, and of the KL term.
    reconstruction: Option<Tensor<1>>,
    kl: Option<Tensor<1>>,
}

/// The loss terms of `model` on `inputs` (the data first; a conditional model's class after it) against `clean`.
fn terms(model: &Graph, config: &ReconstructionConfig, inputs: Vec<Data>, clean: Tensor<2>, ctx: Ctx) -> Result<Terms> {
    let taps = match config.beta {
        Some(_) => sampling_node(model)?.1.to_vec(),
        None => vec![],
    };
    let (mut outputs, mut tapped) = model.forward_tapped(inputs, ctx, true, &taps)?;
    let output = outputs.remove(0).data.flatten_rows();
    let width = output.dims()[1];
    let per_row = config.loss.per_row(output, Target::Values(clean))?;
    let Some(beta) = config.beta else {
        return Ok(Terms {
            loss: per_row.clone().mean(),
            per_row,
            reconstruction: None,
            kl: None,
        });
    };
    let log_var = tapped.remove(1).data.flatten_rows();
    let mean = tapped.remove(0).data.flatten_rows();
    let reconstruction = per_row.clone().mul_scalar(width as f64).mean();
    let kl = crate::task::divergence::gaussian_kl(mean, log_var)?;
    Ok(Terms {
        loss: reconstruction.clone() + kl.clone().mul_scalar(beta),
        per_row,
        reconstruction: Some(reconstruction),
        kl: Some(kl),
    })
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

/// An autoencoder or VAE [`TrainStep`]: one model, one optimizer.
pub struct Reconstruction {
    pub model: Graph,
    config: ReconstructionConfig,
    optim: ModuleOptimizer,
    resampler: Option<Resampler>,
    device: Device,
    epoch: usize,
    batch: usize,
    /// VAE: sums over the epoch's rows of the reconstruction and KL terms, and the rows seen.
    sums: (f64, f64, usize),
}

impl Reconstruction {
    /// `model` is built on an autodiff device; `fit` gives the optimizer, gradient clipping and resampling by
    /// class of `train` (seeded by `seed`).
    pub fn new(
        model: Graph,
        config: ReconstructionConfig,
        fit: &FitConfig,
        train: &Dataset,
        seed: u64,
    ) -> Result<Self> {
        check_model(&model, &config)?;
        let device = model.devices().first().cloned().unwrap_or_default();
        let optim = fit.optimizer.init(fit.clip_grad).at("train.optimizer")?;
        Ok(Reconstruction {
            model,
            config,
            optim,
            resampler: Resampler::new(fit.resample, train, seed)?,
            device,
            epoch: 0,
            batch: 0,
            sums: (0.0, 0.0, 0),
        })
    }
}

/// The model inputs of `batch` (the data, then a conditional model's class) and the flattened data (the target).
fn input_and_target(batch: &Batch, device: &Device) -> Result<(Vec<Data>, Tensor<2>)> {
    let inputs = batch_inputs(batch, device)?;
    let target = inputs[0].clone().flatten_rows();
    Ok((inputs, target))
}

fn add_noise(input: Data, noise: f64) -> Data {
    let normal = Distribution::Normal(0.0, noise);
    match input {
        Data::D2(t) => Data::D2(t.clone() + t.random_like(normal)),
        Data::D3(t) => Data::D3(t.clone() + t.random_like(normal)),
        Data::D4(t) => Data::D4(t.clone() + t.random_like(normal)),
    }
}

impl TrainStep for Reconstruction {
    fn model(&self) -> &Graph {
        &self.model
    }

    fn resumable(&self) -> bool {
        true
    }

    fn save_state(&self, dir: &std::path::Path) -> Result<()> {
        crate::train::resume::save_trained(dir, "model", &self.model, &self.optim)?;
        crate::train::resume::write_json(&dir.join("epoch.json"), &(self.epoch, self.batch, self.sums))
    }

    fn load_state(&mut self, dir: &std::path::Path) -> Result<()> {
        crate::train::resume::load_trained(dir, "model", &mut self.model, &mut self.optim)?;
        let (epoch, batch, sums): (usize, usize, (f64, f64, usize)) =
            crate::train::resume::read_json(&dir.join("epoch.json"))?;
        if epoch == self.epoch {
            self.batch = batch;
            self.sums = sums;
        }
        Ok(())
    }

    fn model_mut(&mut self) -> &mut Graph {
        &mut self.model
    }

    fn epoch_order(&self, epoch: usize) -> Result<Option<Vec<usize>>> {
        self.resampler.as_ref().map(|r| r.order(epoch)).transpose()
    }

    fn begin_epoch(&mut self, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        self.batch = 0;
        self.sums = (0.0, 0.0, 0);
        Ok(())
    }

    fn train_batch(&mut self, batch: &Batch, lr: f64) -> Result<f64> {
        self.batch += 1;
        let (mut input, clean) = input_and_target(batch, &self.device)?;
        if self.config.noise > 0.0 {
            input[0] = add_noise(input[0].clone(), self.config.noise);
        }
        let ctx = Ctx {
            training: true,
            ..Ctx::default()
        };
        let t = terms(&self.model, &self.config, input, clean, ctx)?;
        let value = scalar(t.loss.clone());
        if !value.is_finite() {
            return Err(Error::new(format!(
                "the loss became {value} at epoch {}, batch {}; training stopped (the last good checkpoint is kept); \
                 try a lower learning rate or gradient clipping",
                self.epoch, self.batch
            )));
        }
        if let (Some(r), Some(k)) = (t.reconstruction, t.kl) {
            let n = batch.len();
            self.sums.0 += scalar(r) * n as f64;
            self.sums.1 += scalar(k) * n as f64;
            self.sums.2 += n;
        }
        let loss = t.loss;
        self.model = optimizer_step(self.model.take(), loss, &mut self.optim, lr);
        Ok(value)
    }

    fn end_epoch(&mut self, validation: Option<&Dataset>, logs: &mut Logs) -> Result<()> {
        if self.sums.2 > 0 {
            logs.insert("reconstruction".into(), self.sums.0 / self.sums.2 as f64);
            logs.insert("kl".into(), self.sums.1 / self.sums.2 as f64);
        }
        if let Some(val) = validation {
            let e = evaluate_reconstruction(&self.model.valid(), &self.config, val)?;
            logs.insert("val_loss".into(), e.loss);
            if let (Some(r), Some(k)) = (e.reconstruction, e.kl) {
                logs.insert("val_reconstruction".into(), r);
                logs.insert("val_kl".into(), k);
            }
        }
        Ok(())
    }
}

/// A reconstruction model's loss on a data set, in inference mode.
#[derive(Debug, Clone)]
pub struct ReconstructionEval {
    /// The mean loss (autoencoder) or negative ELBO per sample (VAE; one posterior draw per sample).
    pub loss: f64,
    /// VAE: the reconstruction and KL terms (their β-weighted sum is `loss`).
    pub reconstruction: Option<f64>,
    pub kl: Option<f64>,
    /// Per sample, the loss averaged over its elements, with the posterior mean as the code for a VAE: the
    /// anomaly score.
    pub errors: Vec<f64>,
}

/// Evaluates `model` (inference mode, no noise) on `data`: the loss as trained and every sample's reconstruction
/// error. A VAE's ELBO draws one code per sample (seeded by the device), its errors use the posterior mean.
pub fn evaluate_reconstruction(
    model: &Graph,
    config: &ReconstructionConfig,
    data: &Dataset,
) -> Result<ReconstructionEval> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let (mut loss, mut rec, mut kl) = (0.0, 0.0, 0.0);
    let mut errors = Vec::with_capacity(data.len());
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(EVAL_BATCH) {
        let batch = gather(data, chunk)?;
        let (input, clean) = input_and_target(&batch, &device)?;
        let n = chunk.len() as f64;
        let plain = terms(model, config, input.clone(), clean.clone(), Ctx::default())?;
        let plain_loss = plain.loss;
        errors.extend(
            plain
                .per_row
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default()
                .into_iter()
                .map(f64::from),
        );
        if config.beta.is_some() {
            let ctx = Ctx {
                sample_latent: true,
                ..Ctx::default()
            };
            let drawn = terms(model, config, input, clean, ctx)?;
            loss += scalar(drawn.loss) * n;
            rec += drawn.reconstruction.map_or(0.0, scalar) * n;
            kl += drawn.kl.map_or(0.0, scalar) * n;
        } else {
            loss += scalar(plain_loss) * n;
        }
    }
    let n = data.len().max(1) as f64;
    let vae = config.beta.is_some();
    Ok(ReconstructionEval {
        loss: loss / n,
        reconstruction: vae.then_some(rec / n),
        kl: vae.then_some(kl / n),
        errors,
    })
}
