//! A small CNN trained on the built-in digits from Rust, without a TOML file: data, model, heads, training with
//! callbacks, evaluation on a held-out split, and the run saved where `graft predict` can use it.
//!
//! `cargo run --release -p graft --example digits_cnn [-- OUT_DIR]`

use burn::prelude::*;
use graft::Result;
use graft::data::{load_digits, split_indices};
use graft::layers::LayerSpec;
use graft::layers::activation::{Activation, NoOptions};
use graft::layers::conv::ConvConfig;
use graft::layers::dense::DenseConfig;
use graft::layers::pool::PoolConfig;
use graft::model::{Graph, ModelSpec};
use graft::task::head::TaskHead;
use graft::task::loss::LossSpec;
use graft::train::callbacks::{EarlyStopping, EarlyStoppingSpec, Progress};
use graft::train::optim::OptimizerSpec;
use graft::train::trainer::{EVAL_BATCH, evaluate};
use graft::train::{FitConfig, Trainer};

fn main() -> Result<()> {
    let seed = 7;
    let digits = load_digits()?; // [1797, 1, 8, 8] in 0..=1, classes "0".."9"
    let (train_rows, test_rows) = split_indices(digits.len(), 0.2, digits.labels(), seed)?;
    let (train, test) = (digits.select(&train_rows), digits.select(&test_rows));
    let (fit_rows, val_rows) = split_indices(train.len(), 0.1, train.labels(), seed)?;
    let (fit_set, validation) = (train.select(&fit_rows), train.select(&val_rows));

    let spec = ModelSpec::sequential(vec![1, 8, 8])
        .add_named(
            "conv1",
            LayerSpec::Conv2d(ConvConfig::new(16, 3).with_activation(Activation::Relu)),
        )
        .add(LayerSpec::MaxPool2d(PoolConfig::new(2)))
        .add(LayerSpec::Flatten(NoOptions {}))
        .add_named(
            "hidden",
            LayerSpec::Dense(DenseConfig::new(64).with_activation(Activation::Relu)),
        )
        .add_named("out", LayerSpec::Dense(DenseConfig::new(10)));
    let device = Device::default();
    device.seed(seed);
    let model = Graph::build(&spec, &device.clone().autodiff())?;
    println!("{}", model.summary());

    let loss = LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.0 };
    let classes = digits.class_names().unwrap_or_default().to_vec();
    let heads = [TaskHead::new(&loss, 10, classes)?];
    let config = FitConfig::default()
        .with_epochs(15)
        .with_batch_size(32)
        .with_optimizer(OptimizerSpec::adam(3e-3))
        .with_metrics(["accuracy"]);
    let mut trainer = Trainer::new(config.clone())
        .with_seed(seed)
        .with_callback(Progress::new(config.epochs, config.batch_size))
        .with_callback(EarlyStopping::new(EarlyStoppingSpec::new("val_loss", 3))?);
    let fitted = trainer.fit(model, &heads, &fit_set, Some(&validation))?;

    let scores = evaluate(&fitted.model.valid(), &heads, &test, &[None], EVAL_BATCH, 5, false)?;
    let figure = |name: &str| scores.get(name).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    println!("test accuracy {:.4}, loss {:.4}", figure("accuracy"), figure("loss"));
    if let Some(out) = std::env::args().nth(1) {
        graft::model::io::save_model(&fitted.model, std::path::Path::new(&out))?;
        println!("model written to {out}");
    }
    Ok(())
}
