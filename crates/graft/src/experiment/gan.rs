//! Running a `[gan]` experiment: `[model]` is the generator (its input is the code), `[gan.discriminator]` the
//! discriminator, trained in alternation on the training split (the GAN has no validation loss; the test split is
//! left for `graft fid`). After every epoch the generator decodes the same seeded codes into `samples/epoch-N.png`,
//! so the run shows how the samples evolved; the report has the last grid and the losses' curves. The run
//! directory's model is the generator (what `graft sample` and `graft fid` use); the discriminator is kept in
//! `discriminator/`.

use std::path::PathBuf;

use burn::module::Module;
use serde_json::Map;

use crate::error::{Context, Error, Result};
use crate::experiment::data::{check_data_fits, prepare_fold};
use crate::experiment::run::{RunOptions, RunResult, finish_run, record_run, run_callbacks, train_run};
use crate::experiment::spec::{CheckpointSpec, ExperimentSpec, GanSpec};
use crate::infer::manifest::Manifest;
use crate::layers::value::Data;
use crate::model::Graph;
use crate::model::io::save_model;
use crate::report::ImageGrid;
use crate::train::adversarial::{Adversarial, AdversarialConfig, check_models};
use crate::train::callbacks::{Callback, Control, Logs};

/// Samples in each epoch's grid.
const GRID: usize = 40;
const GRID_COLUMNS: usize = 10;

pub fn run_gan(exp: &ExperimentSpec, gan: &GanSpec, opts: &RunOptions) -> Result<RunResult> {
    if exp.model.inputs.len() != 1 || exp.model.inputs[0].shape.is_empty() {
        return Err(Error::new(
            "a generator's input is its code, not the data: give its size, e.g. [model] input = [16]",
        )
        .at("model"));
    }
    let (_lock, from) = match crate::experiment::run_dir::open_run_dir(exp, opts)? {
        crate::experiment::run_dir::Opened::Finished(done) => return Ok(done),
        crate::experiment::run_dir::Opened::Ready(lock, from) => (lock, from),
    };
    // The GAN's steps, sampling and FID read the images as arrays: decoded once, held in memory.
    let mut splits = prepare_fold(exp, opts.seed, opts.test_rows.as_deref(), None)?.materialized()?;
    let sample_shape = splits.train.inputs.sample_shape().to_vec();
    let device = opts.device.clone().autodiff();
    device.seed(opts.seed);
    let generator = Graph::build(&exp.model, &device).at("model")?;
    let discriminator_spec = gan.discriminator.clone().with_data_shape(&sample_shape);
    let discriminator = Graph::build(&discriminator_spec, &device).at("gan.discriminator")?;
    check_models(&generator, &discriminator, &sample_shape)?;
    check_data_fits(&discriminator, &mut splits.train, "data.dataset")?;
    let fit = exp.train.fit_config();
    let config = AdversarialConfig::new(gan.loss, gan.optimizer.clone().unwrap_or_else(|| exp.train.optimizer()))
        .with_critic_steps(gan.critic_steps);
    let mut step = Adversarial::new(generator, discriminator, config, &fit, &splits.train, opts.seed)?;
    record_run(exp, opts)?;
    let classes = splits.train.class_names().map(<[String]>::to_vec).unwrap_or_default();
    let manifest = Manifest::for_objective(&step.generator, &splits.preprocessor, &exp.train.loss, "gan", classes);
    manifest.write(&opts.out)?;

    // No loss ranks generators: the checkpoint keeps the latest epoch unless the user names a monitor.
    let mut exp_latest = exp.clone();
    if exp.train.callbacks.checkpoint.is_none() {
        exp_latest.train.callbacks.checkpoint = Some(CheckpointSpec {
            monitor: "epoch".into(),
            mode: None,
        });
    }
    let (mut callbacks, checkpoint) = run_callbacks(&exp_latest, opts, false)?;
    callbacks.push(Box::new(checkpoint));
    let grids = SampleGrids::new(&step.generator, opts.out.join("samples"), opts.seed)?;
    callbacks.push(Box::new(grids));
    // The GAN trains on the training split only; the validation rows are not scored.
    let history = train_run(&fit, opts, &mut callbacks, &mut step, &splits.train, None, from)?;

    let generator = step.generator.valid();
    let discriminator = step.discriminator.valid();
    save_model(&discriminator, &opts.out.join("discriminator"))?;
    let last = SampleGrids::new(&generator, opts.out.clone(), opts.seed)?.grid(&generator, "samples.png")?;
    let grids: Vec<ImageGrid> = last.into_iter().collect();
    finish_run(
        exp,
        opts,
        &generator,
        &manifest,
        history,
        Map::new(),
        Map::new(),
        &grids,
    )
}

/// After every epoch, the generator's samples of the same seeded codes as `epoch-N.png` in `dir` (image-shaped
/// samples only), so epochs compare sample for sample.
struct SampleGrids {
    dir: PathBuf,
    codes: Option<Data>,
}

impl SampleGrids {
    fn new(generator: &Graph, dir: PathBuf, seed: u64) -> Result<Self> {
        let shape = generator.output_shapes().remove(0);
        if ImageGrid::image_shape(&shape).is_none() {
            return Ok(SampleGrids { dir, codes: None });
        }
        // The codes come from their own seeded draw on the host, so they neither depend on nor disturb the
        // training's random stream.
        let code = generator.input_shapes().remove(0);
        let size: usize = code.iter().product();
        let values = crate::data::rng::normal_samples(GRID * size, b"gan_grid", seed);
        let array = crate::data::Array::new(std::iter::once(GRID).chain(code).collect(), values)?;
        let device = generator.devices().first().cloned().unwrap_or_default();
        Ok(SampleGrids {
            dir,
            codes: Some(crate::layers::value::input_data(&array, &device)?),
        })
    }

    /// Writes the grid of `generator`'s samples as `file`, returning it for the report.
    fn grid(&self, generator: &Graph, file: &str) -> Result<Option<ImageGrid>> {
        let Some(codes) = &self.codes else {
            return Ok(None);
        };
        let shape = generator.output_shapes().remove(0);
        let Some(image) = ImageGrid::image_shape(&shape) else {
            return Ok(None);
        };
        let samples = generator
            .valid()
            .forward(vec![codes.clone()], false, false)?
            .remove(0)
            .data;
        let values = samples
            .flatten_rows()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::new(format!("cannot read the samples back: {e:?}")))?;
        let size = values.len() / GRID;
        let grid = ImageGrid {
            file: file.into(),
            caption: format!("{GRID} samples of the trained generator (the same codes every epoch)"),
            shape: image,
            images: values.chunks(size).map(<[f32]>::to_vec).collect(),
            columns: GRID_COLUMNS,
        };
        std::fs::create_dir_all(&self.dir).in_file(&self.dir)?;
        grid.write_png(&self.dir.join(file))?;
        Ok(Some(grid))
    }
}

impl Callback for SampleGrids {
    fn on_epoch_end(&mut self, epoch: usize, _logs: &Logs, model: &Graph, _control: &mut Control) -> Result<()> {
        self.grid(model, &format!("epoch-{epoch:03}.png"))?;
        Ok(())
    }
}
