//! Image files as model inputs (JPEG, PNG, BMP, GIF or WebP): decoding, resizing and normalizing one file as
//! [`ImagePreprocessing`] says, and the lazy rows of an image data set ([`ImageRows`]): a data set of images holds
//! its file list, and each batch decodes its own files on a pool of decoding threads — so a folder larger than
//! memory trains in flat memory. Augmentation ([`Augment`]) is drawn per image from the seed, the epoch and the file,
//! for training rows only. Reading a folder or CSV into such a data set is `image_source`'s.

pub mod augment;
pub mod decode;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Array;
use crate::error::{Error, Result};
use crate::rng::seeded_rng;
pub use augment::{Augment, Flip, RandomCrop};
pub use decode::{Fit, Region};

/// The file extensions read as images (any case).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "gif", "webp"];

/// What turns an image file into a model input, stored in `preprocess.json`: the size, the channels, the fit and
/// the per-channel normalization of the 0–1 pixel values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePreprocessing {
    /// `[height, width]`.
    pub size: [usize; 2],
    pub channels: usize,
    pub resize: Fit,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ImagePreprocessing {
    /// `[channels, height, width]`: one model input.
    pub fn sample_shape(&self) -> Vec<usize> {
        vec![self.channels, self.size[0], self.size[1]]
    }

    /// The smallest and largest value a model input can hold (black and white, normalized).
    pub fn value_range(&self) -> (f32, f32) {
        let lows = self.mean.iter().zip(&self.std).map(|(m, s)| (0.0 - m) / s);
        let highs = self.mean.iter().zip(&self.std).map(|(m, s)| (1.0 - m) / s);
        (
            lows.fold(f32::INFINITY, f32::min),
            highs.fold(f32::NEG_INFINITY, f32::max),
        )
    }

    /// The model input of one decoded image; `draw`: an augmentation and the generator for this image.
    fn input(&self, image: &image::DynamicImage, draw: Option<(&Augment, &mut rand_chacha::ChaCha8Rng)>) -> Vec<f32> {
        let [h, w] = self.size;
        let c = self.channels;
        let (mut pixels, draw) = match draw {
            Some((augment, rng)) => {
                let region = augment.region(image.width(), image.height(), rng);
                let mut p = decode::to_input(image, c, self.size, self.resize, region);
                augment.apply_pixels(&mut p, c, h, w, rng);
                (p, Some((augment, rng)))
            }
            None => (decode::to_input(image, c, self.size, self.resize, None), None),
        };
        for (k, plane) in pixels.chunks_exact_mut(h * w).enumerate() {
            let (m, s) = (self.mean[k], self.std[k]);
            if (m, s) != (0.0, 1.0) {
                plane.iter_mut().for_each(|v| *v = (*v - m) / s);
            }
        }
        if let Some((augment, rng)) = draw {
            augment.apply_cutout(&mut pixels, c, h, w, rng);
        }
        pixels
    }

    /// One file's model input; a colour image for a grey model is refused (its colour would be lost unseen).
    pub fn load_file(&self, path: &Path) -> Result<Vec<f32>> {
        let d = decode::decode_file(path)?;
        self.check_colour(&d).map_err(|e| e.in_file(path))?;
        Ok(self.input(&d.image, None))
    }

    /// The model input of an image file held in memory (sent to the server, say).
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        let d = decode::decode_bytes(bytes)?;
        self.check_colour(&d)?;
        Ok(self.input(&d.image, None))
    }

    fn check_colour(&self, d: &decode::Decoded) -> Result<()> {
        if self.channels == 1 && d.has_colour {
            return Err(Error::new(
                "a colour image, but the images are read as grey (channels = 1): set channels = 3, or convert it",
            ));
        }
        Ok(())
    }

    /// The model inputs of `files`, decoded in parallel, in order: `[n, channels, height, width]`.
    pub fn load_files(&self, files: &[PathBuf]) -> Result<Array> {
        let rows: Vec<Result<Vec<f32>>> =
            decode_pool().install(|| files.par_iter().map(|f| self.load_file(f)).collect());
        let mut data = Vec::with_capacity(files.len() * self.sample_shape().iter().product::<usize>());
        for row in rows {
            data.extend(row?);
        }
        Array::new(std::iter::once(files.len()).chain(self.sample_shape()).collect(), data)
    }
}

/// The threads that decode images: as many as the machine has cores, apart from the pool the model computes on,
/// so a batch's files decode while the previous batch trains.
pub(crate) fn decode_pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("graft-decode-{i}"))
            .build()
            .unwrap_or_else(|_| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .expect("one thread")
            })
    })
}

/// The images of a data set, decoded when a batch asks for them. A data set of images holds, as its input array,
/// one number per row: the row's index into `files`, which moves with the row through splits and shuffles.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRows {
    pub files: Arc<Vec<PathBuf>>,
    pub preprocessing: ImagePreprocessing,
    /// Applied by [`ImageRows::load`] when it is given a draw (the training rows).
    pub augment: Option<Augment>,
}

/// The most files one data set may list: file ids travel as `f32`, exact up to 2^24.
pub(crate) const MAX_FILES: usize = 1 << 24;

impl ImageRows {
    /// The model inputs of the rows whose file ids are `ids`, `[n, channels, height, width]`; with `draw`
    /// (`(seed, epoch)`) and an augmentation, each image drawn from its own generator.
    pub fn load(&self, ids: &[usize], draw: Option<(u64, usize)>) -> Result<Array> {
        let augment = self.augment.as_ref().zip(draw);
        let one = |&id: &usize| -> Result<Vec<f32>> {
            let path = &self.files[id];
            let d = decode::decode_file(path)?;
            self.preprocessing.check_colour(&d).map_err(|e| e.in_file(path))?;
            Ok(match augment {
                Some((a, (seed, epoch))) => {
                    let mut rng = seeded_rng(b"augment\0", seed, ((epoch as u64) << 32) | id as u64);
                    self.preprocessing.input(&d.image, Some((a, &mut rng)))
                }
                None => self.preprocessing.input(&d.image, None),
            })
        };
        let rows: Vec<Result<Vec<f32>>> = decode_pool().install(|| ids.par_iter().map(one).collect());
        let shape = self.preprocessing.sample_shape();
        let mut data = Vec::with_capacity(ids.len() * shape.iter().product::<usize>());
        for row in rows {
            data.extend(row?);
        }
        Array::new(std::iter::once(ids.len()).chain(shape).collect(), data)
    }

    /// The file ids held in an image data set's input array.
    pub fn ids(inputs: &Array) -> Vec<usize> {
        inputs.data.iter().map(|&v| v as usize).collect()
    }
}

pub(crate) fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Whether a file read as text is an image: named like one, or starting as a PNG, JPEG, GIF, BMP or WebP does.
pub(crate) fn looks_like_image(path: &Path, bytes: &[u8]) -> bool {
    let magic: [&[u8]; 5] = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF"];
    let webp = bytes.len() >= 12 && &bytes[8..12] == b"WEBP";
    is_image(path) || magic[..3].iter().any(|m| bytes.starts_with(m)) || (bytes.starts_with(magic[4]) && webp)
}
