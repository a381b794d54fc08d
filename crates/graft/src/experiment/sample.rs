//! `graft sample`: new samples from a trained VAE's run directory, as an array or an image grid.

use std::path::Path;

use burn::prelude::Device;

use crate::data::write_npy_f32;
use crate::error::{Context, Error, Result};
use crate::infer::sample::sample_prior;
use crate::report::ImageGrid;

/// `graft sample`: `n` samples of the VAE or GAN in the run directory `model_dir`, seeded, written to `output` — a
/// float32 `.npy` of `[n, output shape]`, or a `.png` grid when the outputs are images; a conditional model's
/// samples are all of `class` (a class name), or of its classes in turn. Returns `n`.
pub fn sample_file(
    model_dir: &Path,
    n: usize,
    class: Option<&str>,
    output: &Path,
    seed: u64,
    device: &Device,
) -> Result<usize> {
    let predictor = crate::infer::predict::Predictor::load(model_dir, device)?;
    if !matches!(predictor.objective.as_deref(), Some("vae" | "gan")) {
        return Err(Error::new(format!(
            "graft sample draws from a generative model's prior; this run is not a [vae] or [gan] experiment but {}",
            match predictor.objective.as_deref() {
                Some("autoencoder") => "an autoencoder, which has no prior to sample",
                Some("siamese") => "a siamese model",
                Some("word2vec") => "word vectors",
                _ => "a supervised model",
            }
        ))
        .in_file(model_dir));
    }
    let extension = output.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    device.seed(seed);
    let class = match class {
        Some(name) => {
            let classes = crate::infer::manifest::Manifest::read(model_dir)?.classes;
            let index = classes.iter().position(|c| c == name).ok_or_else(|| {
                Error::new(format!(
                    "no class '{name}'{}; the model's classes are {}",
                    graft_data::suggest::hint(name, classes.iter().map(String::as_str)),
                    classes.join(", ")
                ))
                .at("--class")
            })?;
            Some(index)
        }
        None => None,
    };
    let samples = sample_prior(&predictor.graph, n, class).in_file(model_dir)?;
    match extension.as_deref() {
        Some("npy") => write_npy_f32(output, &samples)?,
        Some("png") => {
            let shape = ImageGrid::image_shape(samples.sample_shape()).ok_or_else(|| {
                Error::new(format!(
                    "the samples have shape {:?}, not an image; write a .npy",
                    samples.sample_shape()
                ))
                .in_file(output)
            })?;
            let size = samples.sample_size();
            let grid = ImageGrid {
                file: String::new(),
                caption: String::new(),
                shape,
                images: samples.data.chunks(size).map(<[f32]>::to_vec).collect(),
                columns: (n as f64).sqrt().ceil() as usize,
            };
            grid.write_png(output)?;
        }
        _ => return Err(Error::new("the output must end in .npy or .png").in_file(output)),
    }
    Ok(n)
}
