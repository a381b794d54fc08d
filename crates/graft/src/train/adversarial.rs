//! Adversarial training (GANs): a generator turns codes drawn from N(0, I) into samples, a discriminator (a critic
//! for the Wasserstein loss) scores samples as real or generated, and the two are trained in alternation, each by
//! its own optimizer. Per batch of real data the discriminator takes one step on the real batch and a batch of
//! generated samples (detached, so the generator is not moved by it); every `critic_steps`-th batch the generator
//! takes one step through the discriminator. The non-saturating loss is Goodfellow et al.'s (the generator maximizes
//! log D(G(z))); the Wasserstein loss with gradient penalty is Gulrajani et al.'s WGAN-GP, whose penalty is
//! differentiated through the critic's input gradient ([`Graph::input_gradient`]). One [`TrainStep`], run by the
//! same [`Trainer`](crate::train::Trainer) loop as every other training.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::data::{Batch, Dataset};
use crate::error::{Context, Error, Result};
use crate::layers::value::{Data, batch_inputs};
use crate::model::Graph;
use crate::task::gan::{GanLoss, gradient_penalty_from_grad};
use crate::train::callbacks::Logs;
use crate::train::config::FitConfig;
use crate::train::optim::OptimizerSpec;
use crate::train::step::{Resampler, TrainStep};

/// How the two networks train.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialConfig {
    pub loss: GanLoss,
    /// Discriminator steps per generator step (WGAN-GP trains its critic 5 times as often).
    pub critic_steps: usize,
    /// The discriminator's optimizer; the generator's is the training loop's. Both follow the loop's schedule (the
    /// discriminator's rate is scaled by the same factor).
    pub discriminator_optimizer: OptimizerSpec,
}

impl AdversarialConfig {
    pub fn new(loss: GanLoss, discriminator_optimizer: OptimizerSpec) -> Self {
        AdversarialConfig {
            loss,
            critic_steps: 1,
            discriminator_optimizer,
        }
    }

    pub fn with_critic_steps(mut self, steps: usize) -> Self {
        self.critic_steps = steps;
        self
    }
}

/// Checks that `generator` turns codes into samples of the data's per-sample shape `sample` and `discriminator`
/// gives one score per sample.
pub fn check_models(generator: &Graph, discriminator: &Graph, sample: &[usize]) -> Result<()> {
    if generator.input_shapes().len() != 1 || generator.output_shapes().len() != 1 {
        return Err(Error::new("the generator has one input (the code) and one output (a sample)").at("model"));
    }
    let made = &generator.output_shapes()[0];
    if made.as_slice() != sample {
        return Err(Error::new(format!(
            "the generator makes samples of shape {made:?} but the data's are {sample:?}; end it in a layer of the \
             data's shape"
        ))
        .at("model"));
    }
    if discriminator.input_shapes() != [sample.to_vec()] || discriminator.output_shapes() != [vec![1]] {
        return Err(Error::new(format!(
            "the discriminator takes one sample of shape {sample:?} and gives one score (output [1]); it takes {:?} \
             and gives {:?}",
            discriminator.input_shapes(),
            discriminator.output_shapes()
        ))
        .at("gan.discriminator"));
    }
    Ok(())
}

/// Sums over an epoch of what the history logs.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Sums {
    d_loss: f64,
    g_loss: f64,
    real: f64,
    fake: f64,
    penalty: f64,
    d_steps: usize,
    g_steps: usize,
}

/// The GAN [`TrainStep`]: the generator is [`TrainStep::model`] (what checkpoints keep and `graft sample` runs).
pub struct Adversarial {
    pub generator: Graph,
    pub discriminator: Graph,
    config: AdversarialConfig,
    g_optim: ModuleOptimizer,
    d_optim: ModuleOptimizer,
    /// The generator's base rate, so the discriminator's follows the schedule by the same factor.
    base_lr: f64,
    code: Vec<usize>,
    resampler: Option<Resampler>,
    device: Device,
    batches: usize,
    epoch: usize,
    sums: Sums,
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

impl Adversarial {
    /// `generator` and `discriminator` are built on an autodiff device; `fit` gives the generator's optimizer,
    /// gradient clipping (which both use) and resampling by class of `train` (seeded by `seed`).
    pub fn new(
        generator: Graph,
        discriminator: Graph,
        config: AdversarialConfig,
        fit: &FitConfig,
        train: &Dataset,
        seed: u64,
    ) -> Result<Self> {
        if config.critic_steps == 0 {
            return Err(Error::new("must be at least 1").at("gan.critic_steps"));
        }
        config.loss.check().at("gan.loss")?;
        let device = generator.devices().first().cloned().unwrap_or_default();
        let g_optim = fit.optimizer.init(fit.clip_grad).at("train.optimizer")?;
        let d_optim = config.discriminator_optimizer.init(fit.clip_grad).at("gan.optimizer")?;
        let code = generator.input_shapes().remove(0);
        Ok(Adversarial {
            generator,
            discriminator,
            config,
            g_optim,
            d_optim,
            base_lr: fit.optimizer.lr(),
            code,
            resampler: Resampler::new(fit.resample, train, seed)?,
            device,
            batches: 0,
            epoch: 0,
            sums: Sums::default(),
        })
    }

    /// The discriminator's scores (logits) of `samples`, `[batch, 1]`.
    fn scores(&self, samples: Data) -> Result<Tensor<2>> {
        Ok(self
            .discriminator
            .forward(vec![samples], true, true)?
            .remove(0)
            .data
            .flatten_rows())
    }

    /// Generated samples of `n` fresh codes, in training mode (pixel values: a final tanh or sigmoid applied).
    fn generate(&self, n: usize) -> Result<Data> {
        let codes = Data::normal(n, &self.code, &self.device)?;
        Ok(self.generator.forward(vec![codes], true, false)?.remove(0).data)
    }

    fn discriminator_step(&mut self, real: Data, lr: f64) -> Result<f64> {
        let n = real.dims()[0];
        let fake = self.generate(n)?.detach();
        let (real_scores, fake_scores) = (self.scores(real.clone())?, self.scores(fake.clone())?);
        self.sums.real += scalar(self.shown(real_scores.clone()));
        self.sums.fake += scalar(self.shown(fake_scores.clone()));
        let mut loss = self.config.loss.discriminator(real_scores, fake_scores);
        if let Some(weight) = self.config.loss.gradient_penalty() {
            let penalty = self.penalty(real, fake, n)?;
            self.sums.penalty += scalar(penalty.clone());
            loss = loss + penalty.mul_scalar(weight);
        }
        let value = scalar(loss.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &self.discriminator);
        self.discriminator = self.d_optim.step(lr, self.discriminator.clone(), grads);
        Ok(value)
    }

    /// mean over rows of (‖∂D(x̂)/∂x̂‖ − 1)² at x̂ = α·real + (1 − α)·fake, α ~ U(0, 1) per row.
    fn penalty(&self, real: Data, fake: Data, n: usize) -> Result<Tensor<1>> {
        let alpha = Tensor::<2>::random([n, 1], Distribution::Uniform(0.0, 1.0), &self.device);
        let dims = real.dims();
        let (real, fake) = (real.flatten_rows(), fake.flatten_rows());
        let mixed = fake.clone() + (real - fake) * alpha;
        let mixed = Data::D2(mixed).reshape(&dims)?;
        let grad = self.discriminator.input_gradient(mixed, true)?;
        Ok(gradient_penalty_from_grad(grad.flatten_rows()))
    }

    /// What the history shows of a batch's scores: the mean probability of "real" (non-saturating) or the mean
    /// critic score (Wasserstein).
    fn shown(&self, scores: Tensor<2>) -> Tensor<1> {
        match self.config.loss {
            GanLoss::NonSaturating => burn::tensor::activation::sigmoid(scores.detach()).mean(),
            GanLoss::Wasserstein { .. } => scores.detach().mean(),
        }
    }

    fn generator_step(&mut self, n: usize, lr: f64) -> Result<f64> {
        let fake = self.generate(n)?;
        let scores = self.scores(fake)?;
        let loss = self.config.loss.generator(scores);
        let value = scalar(loss.clone());
        // The backward pass reaches the discriminator's parameters too; only the generator's are stepped.
        let grads = GradientsParams::from_grads(loss.backward(), &self.generator);
        self.generator = self.g_optim.step(lr, self.generator.clone(), grads);
        Ok(value)
    }
}

impl TrainStep for Adversarial {
    fn model(&self) -> &Graph {
        &self.generator
    }

    fn resumable(&self) -> bool {
        true
    }

    fn save_state(&self, dir: &std::path::Path) -> Result<()> {
        use crate::train::resume::{save_trained, write_json};
        save_trained(dir, "generator", &self.generator, &self.g_optim)?;
        save_trained(dir, "discriminator", &self.discriminator, &self.d_optim)?;
        // Which batch the generator steps on next counts on across epochs; the sums are the epoch's so far.
        write_json(&dir.join("batches.json"), &(self.epoch, self.batches, &self.sums))
    }

    fn load_state(&mut self, dir: &std::path::Path) -> Result<()> {
        use crate::train::resume::{load_trained, read_json};
        load_trained(dir, "generator", &mut self.generator, &mut self.g_optim)?;
        load_trained(dir, "discriminator", &mut self.discriminator, &mut self.d_optim)?;
        let (epoch, batches, sums): (usize, usize, Sums) = read_json(&dir.join("batches.json"))?;
        self.batches = batches;
        // Mid-epoch: the epoch's sums so far; at an epoch's end they belong to the epoch before this one.
        if epoch == self.epoch {
            self.sums = sums;
        }
        Ok(())
    }

    fn model_mut(&mut self) -> &mut Graph {
        &mut self.generator
    }

    fn epoch_order(&self, epoch: usize) -> Result<Option<Vec<usize>>> {
        self.resampler.as_ref().map(|r| r.order(epoch)).transpose()
    }

    fn begin_epoch(&mut self, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        self.sums = Sums::default();
        Ok(())
    }

    fn train_batch(&mut self, batch: &Batch, lr: f64) -> Result<f64> {
        self.batches += 1;
        let real = batch_inputs(batch, &self.device)?.remove(0);
        let scale = if self.base_lr > 0.0 { lr / self.base_lr } else { 1.0 };
        let d_lr = self.config.discriminator_optimizer.lr() * scale;
        let d_loss = self.discriminator_step(real, d_lr)?;
        if !d_loss.is_finite() {
            return Err(Error::new(format!(
                "the discriminator's loss became {d_loss} at batch {}; training stopped (the last good checkpoint is \
                 kept); try lower learning rates",
                self.batches
            )));
        }
        self.sums.d_loss += d_loss;
        self.sums.d_steps += 1;
        if self.batches.is_multiple_of(self.config.critic_steps) {
            let g_loss = self.generator_step(batch.len(), lr)?;
            self.sums.g_loss += g_loss;
            self.sums.g_steps += 1;
        }
        Ok(d_loss)
    }

    fn end_epoch(&mut self, _validation: Option<&Dataset>, logs: &mut Logs) -> Result<()> {
        let s = &self.sums;
        let d = s.d_steps.max(1) as f64;
        logs.insert("d_loss".into(), s.d_loss / d);
        if s.g_steps > 0 {
            logs.insert("g_loss".into(), s.g_loss / s.g_steps as f64);
        }
        match self.config.loss {
            GanLoss::NonSaturating => {
                logs.insert("d_real".into(), s.real / d);
                logs.insert("d_fake".into(), s.fake / d);
            }
            GanLoss::Wasserstein { gradient_penalty } => {
                // The critic's estimate of the Wasserstein-1 distance between real and generated data.
                logs.insert("wasserstein".into(), (s.real - s.fake) / d);
                if gradient_penalty > 0.0 {
                    logs.insert("gradient_penalty".into(), s.penalty / d);
                }
            }
        }
        Ok(())
    }
}
