//! A training step of one's own: a denoising autoencoder on the built-in digits. The step corrupts each batch
//! with Gaussian noise, reconstructs the clean images and minimizes the mean squared error; graft's `Trainer`
//! runs it with its batching, schedule, callbacks and history, exactly as it runs supervised training. The same
//! shape (a struct holding models and optimizers, `train_batch` doing one update) fits a GAN or distillation.
//!
//! `cargo run --release -p graft --example denoising_autoencoder`

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Distribution;
use graft::Result;
use graft::data::{Batch, Dataset, load_digits, split_indices};
use graft::layers::LayerSpec;
use graft::layers::activation::Activation;
use graft::layers::dense::DenseConfig;
use graft::layers::value::{Data, batch_inputs};
use graft::model::{Graph, ModelSpec};
use graft::train::callbacks::{Logs, Progress};
use graft::train::optim::OptimizerSpec;
use graft::train::{FitConfig, TrainStep, Trainer};

/// The denoising step: a model from 64 pixels through a 16-wide code back to 64 pixels, and its optimizer.
struct Denoising {
    model: Graph,
    optimizer: ModuleOptimizer,
    noise: f64,
    device: Device,
}

impl Denoising {
    /// Mean squared reconstruction error of `model` on `batch`'s clean images from `inputs`.
    fn loss(model: &Graph, inputs: Tensor<2>, clean: Tensor<2>) -> Result<Tensor<1>> {
        let out = model.forward(vec![Data::D2(inputs)], true, false)?.remove(0);
        let Data::D2(reconstruction) = out.data else {
            return Err(graft::Error::new("the autoencoder must output [batch, 64]"));
        };
        Ok((reconstruction - clean).powi_scalar(2).mean())
    }

    fn clean(&self, batch: &Batch) -> Result<Tensor<2>> {
        match batch_inputs(batch, &self.device)?.remove(0) {
            Data::D4(images) => Ok(images.flatten(1, 3)),
            Data::D2(rows) => Ok(rows),
            _ => Err(graft::Error::new("expected images or rows")),
        }
    }
}

impl TrainStep for Denoising {
    fn train_batch(&mut self, batch: &Batch, lr: f64) -> Result<f64> {
        let clean = self.clean(batch)?;
        let noise = Tensor::random(clean.dims(), Distribution::Normal(0.0, self.noise), &self.device);
        let loss = Self::loss(&self.model, clean.clone() + noise, clean)?;
        let value = loss.clone().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.model = self.optimizer.step(lr, self.model.clone(), grads);
        Ok(value)
    }

    fn model(&self) -> &Graph {
        &self.model
    }

    fn model_mut(&mut self) -> &mut Graph {
        &mut self.model
    }

    /// The validation images' reconstruction error, without noise, in inference mode.
    fn end_epoch(&mut self, validation: Option<&Dataset>, logs: &mut Logs) -> Result<()> {
        if let Some(val) = validation {
            let model = self.model.valid();
            let device = Device::default();
            let all: Vec<usize> = (0..val.len()).collect();
            let clean = match batch_inputs(&graft::data::gather(val, &all)?, &device)?.remove(0) {
                Data::D4(images) => images.flatten(1, 3),
                Data::D2(rows) => rows,
                _ => return Err(graft::Error::new("expected images or rows")),
            };
            let out = model.forward(vec![Data::D2(clean.clone())], false, false)?.remove(0);
            if let Data::D2(reconstruction) = out.data {
                let mse = (reconstruction - clean).powi_scalar(2).mean().into_scalar::<f32>();
                logs.insert("val_loss".into(), mse as f64);
            }
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let seed = 3;
    let digits = load_digits()?;
    let (train_rows, val_rows) = split_indices(digits.len(), 0.2, None, seed)?;
    let (train, validation) = (digits.select(&train_rows), digits.select(&val_rows));

    let spec = ModelSpec::sequential(vec![64])
        .add_named(
            "encoder",
            LayerSpec::Dense(DenseConfig::new(32).with_activation(Activation::Relu)),
        )
        .add_named(
            "code",
            LayerSpec::Dense(DenseConfig::new(16).with_activation(Activation::Relu)),
        )
        .add_named(
            "decoder",
            LayerSpec::Dense(DenseConfig::new(32).with_activation(Activation::Relu)),
        )
        .add_named(
            "pixels",
            LayerSpec::Dense(DenseConfig::new(64).with_activation(Activation::Sigmoid)),
        );
    let device = Device::default();
    device.seed(seed);
    let config = FitConfig::default()
        .with_epochs(20)
        .with_batch_size(64)
        .with_optimizer(OptimizerSpec::adam(3e-3));
    let mut step = Denoising {
        model: Graph::build(&spec, &device.clone().autodiff())?,
        optimizer: config.optimizer.init(None)?,
        noise: 0.2,
        device: device.clone().autodiff(),
    };
    let mut trainer = Trainer::new(config.clone())
        .with_seed(seed)
        .with_callback(Progress::new(config.epochs, config.batch_size));
    let history = trainer.run(&mut step, &train, Some(&validation))?;
    let first = history
        .epochs
        .first()
        .and_then(|e| e["val_loss"].as_f64())
        .unwrap_or(f64::NAN);
    let last = history
        .epochs
        .last()
        .and_then(|e| e["val_loss"].as_f64())
        .unwrap_or(f64::NAN);
    println!(
        "validation reconstruction MSE: epoch 1 {first:.4} → epoch {} {last:.4}",
        history.epochs.len()
    );
    Ok(())
}
