//! Images as users have them: a folder with one sub-folder per class (or a CSV of file paths and labels), in JPEG,
//! PNG, BMP, GIF or WebP. Reading a source lists the files and decodes each once to check it (a bad file is named,
//! or skipped when asked, before any training) but keeps no pixels: a data set of images holds its file list
//! ([`ImageRows`]), and each batch decodes its own files, resized and normalized as [`ImagePreprocessing`] says, on
//! a pool of decoding threads — so a folder larger than memory trains in flat memory. Augmentation ([`Augment`]) is
//! drawn per image from the seed, the epoch and the file, for training rows only.

pub mod augment;
pub mod decode;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use augment::{Augment, Flip, RandomCrop};
pub use decode::{Fit, Region};

use crate::error::{Context, Error, Result};
use crate::rng::seeded_rng;
use crate::{Array, Dataset, Targets};

/// The file extensions read as images (any case).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "gif", "webp"];

/// `data.dataset = { images = { path = "photos", size = [64, 64] } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// A folder with one sub-folder per class, or a CSV file with a file column and a label column.
    pub path: PathBuf,
    /// `[height, width]` of the model input; by default the images' own size, when they all share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<[usize; 2]>,
    /// 1 (grey) or 3 (RGB); by default 1 when no image has colour, else 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// How an image of another aspect ratio reaches `size`.
    #[serde(default)]
    pub resize: Fit,
    #[serde(default)]
    pub normalize: Normalize,
    /// The class folders to use, in label order (by default every sub-folder, sorted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// What a file that cannot be used does: stop with an error naming it, or be skipped (and counted).
    #[serde(default)]
    pub on_error: OnError,
    /// Random changes to training images (never to validation or test images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augment>,
    /// A CSV's column of image paths (relative to the CSV's folder).
    #[serde(default = "file_column")]
    pub file_column: String,
    /// A CSV's column of class labels.
    #[serde(default = "label_column")]
    pub label_column: String,
}

fn file_column() -> String {
    "file".into()
}

fn label_column() -> String {
    "label".into()
}

impl ImageSpec {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ImageSpec {
            path: path.into(),
            size: None,
            channels: None,
            resize: Fit::default(),
            normalize: Normalize::default(),
            classes: None,
            on_error: OnError::default(),
            augment: None,
            file_column: file_column(),
            label_column: label_column(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Error,
    Skip,
}

/// How pixel values become model inputs: `"unit"` (0–1, the default), `"imagenet"` (0–1, then ImageNet's
/// per-channel mean and standard deviation, as torchvision's pretrained models expect), or
/// `{ mean = [...], std = [...] }` per channel on the 0–1 values.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Normalize {
    Named(String),
    MeanStd { mean: Vec<f32>, std: Vec<f32> },
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize::Named("unit".into())
    }
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl<'de> Deserialize<'de> for Normalize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct MeanStd {
            mean: Vec<f32>,
            std: Vec<f32>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Normalize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"unit\", \"imagenet\" or { mean = [...], std = [...] }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Normalize, E> {
                match v {
                    "unit" | "imagenet" => Ok(Normalize::Named(v.into())),
                    other => Err(E::custom(format!(
                        "unknown normalization \"{other}\"{}; expected \"unit\", \"imagenet\" or {{ mean = [...], \
                         std = [...] }}",
                        crate::suggest::hint(other, ["unit", "imagenet"])
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Normalize, A::Error> {
                let m = MeanStd::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Normalize::MeanStd {
                    mean: m.mean,
                    std: m.std,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Normalize {
    /// Per-channel (mean, std) for `channels` channels.
    fn mean_std(&self, channels: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        match self {
            Normalize::Named(n) if n == "imagenet" => {
                if channels != 3 {
                    return Err(Error::new(format!(
                        "\"imagenet\" normalization is for RGB images (channels = 3), not channels = {channels}"
                    ))
                    .at("normalize"));
                }
                Ok((IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec()))
            }
            Normalize::Named(_) => Ok((vec![0.0; channels], vec![1.0; channels])),
            Normalize::MeanStd { mean, std } => {
                if mean.len() != channels || std.len() != channels {
                    return Err(Error::new(format!(
                        "expected {channels} mean and {channels} std value(s), one per channel; found {} and {}",
                        mean.len(),
                        std.len()
                    ))
                    .at("normalize"));
                }
                if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    return Err(Error::new(format!("std values must be positive, found {s}")).at("normalize"));
                }
                Ok((mean.clone(), std.clone()))
            }
        }
    }
}

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
fn decode_pool() -> &'static rayon::ThreadPool {
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
const MAX_FILES: usize = 1 << 24;

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

/// The files of a source and their classes.
struct Listing {
    files: Vec<PathBuf>,
    labels: Vec<usize>,
    classes: Vec<String>,
}

fn is_image(path: &Path) -> bool {
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

/// Image files under `dir`, recursively, sorted; hidden files skipped.
fn images_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    crate::text::collect_files(dir, None, &mut files)?;
    files.retain(|f| is_image(f));
    files.sort();
    Ok(files)
}

fn list_folder(root: &Path, classes: Option<&[String]>) -> Result<Listing> {
    let all = crate::text::sub_folders(root)?;
    let names: Vec<String> = match classes {
        Some(c) => {
            for name in c {
                if !all.contains(name) {
                    return Err(Error::new(format!(
                        "no class folder '{name}'{}; the folders are: {}",
                        crate::suggest::hint(name, all.iter().map(String::as_str)),
                        all.join(", ")
                    ))
                    .at("classes")
                    .in_file(root));
                }
            }
            c.to_vec()
        }
        None => all,
    };
    if names.is_empty() {
        let loose = images_under(root)?.len();
        return Err(Error::new(format!(
            "no class folders here{}: put each class's images in a folder named after the class (or give a CSV \
             with `{}` and `{}` columns)",
            if loose > 0 {
                format!(" ({loose} images lie loose in it)")
            } else {
                String::new()
            },
            file_column(),
            label_column()
        ))
        .in_file(root));
    }
    let (mut files, mut labels) = (vec![], vec![]);
    for (label, name) in names.iter().enumerate() {
        let found = images_under(&root.join(name))?;
        if found.is_empty() {
            return Err(Error::new(format!(
                "class folder '{name}' holds no images ({})",
                IMAGE_EXTENSIONS.join(", ")
            ))
            .in_file(root));
        }
        labels.extend(std::iter::repeat_n(label, found.len()));
        files.extend(found);
    }
    Ok(Listing {
        files,
        labels,
        classes: names,
    })
}

fn list_csv(spec: &ImageSpec, path: &Path) -> Result<Listing> {
    let table = crate::table::read_csv(&crate::table::CsvSpec {
        path: path.to_path_buf(),
        ..crate::table::CsvSpec::default()
    })?;
    let column = |name: &str, key: &str| {
        table.header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            Error::new(format!(
                "no column `{name}`{}; the columns are: {}",
                crate::suggest::hint(name, table.header.iter().map(String::as_str)),
                table.header.join(", ")
            ))
            .at(key)
            .in_file(path)
        })
    };
    let (fc, lc) = (
        column(&spec.file_column, "file_column")?,
        column(&spec.label_column, "label_column")?,
    );
    let base = path.parent().unwrap_or(Path::new(""));
    let mut classes: Vec<String> = match &spec.classes {
        Some(c) => c.clone(),
        None => {
            let mut c: Vec<String> = table.rows.iter().map(|r| r[lc].trim().to_string()).collect();
            c.sort();
            c.dedup();
            c
        }
    };
    classes.retain(|c| !c.is_empty());
    let (mut files, mut labels) = (vec![], vec![]);
    for (i, row) in table.rows.iter().enumerate() {
        let at = || format!("row {}", i + 1);
        let file = row[fc].trim();
        if file.is_empty() {
            return Err(Error::new(format!("empty `{}` cell", spec.file_column))
                .at(at())
                .in_file(path));
        }
        let label = row[lc].trim();
        let Some(k) = classes.iter().position(|c| c == label) else {
            return Err(Error::new(format!(
                "label '{label}' is not one of the classes ({})",
                classes.join(", ")
            ))
            .at(at())
            .in_file(path));
        };
        files.push(base.join(file));
        labels.push(k);
    }
    Ok(Listing { files, labels, classes })
}

/// The image files to predict on: one image, a folder's images (recursively, sorted), or a CSV's file column
/// (`file_column`, else a column named `file`, else its only column).
pub fn list_inputs(path: &Path, file_column: Option<&str>) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).in_file(path)?;
    if meta.is_dir() {
        let files = images_under(path)?;
        if files.is_empty() {
            return Err(Error::new(format!("no images here ({})", IMAGE_EXTENSIONS.join(", "))).in_file(path));
        }
        return Ok(files);
    }
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if !is_csv {
        return Ok(vec![path.to_path_buf()]);
    }
    let table = crate::table::read_csv(&crate::table::CsvSpec {
        path: path.to_path_buf(),
        ..crate::table::CsvSpec::default()
    })?;
    let by_name = |n: &str| table.header.iter().position(|h| h.trim() == n);
    let k = match (file_column.and_then(by_name), by_name("file"), table.header.len()) {
        (Some(k), _, _) | (None, Some(k), _) => k,
        (None, None, 1) => 0,
        _ => {
            return Err(Error::new(format!(
                "a CSV of images to predict on needs a `file` column (or a single column); the columns are: {}",
                table.header.join(", ")
            ))
            .in_file(path));
        }
    };
    let base = path.parent().unwrap_or(Path::new(""));
    Ok(table.rows.iter().map(|r| base.join(r[k].trim())).collect())
}

/// What the check of one file found.
struct Checked {
    width: u32,
    height: u32,
    colour: bool,
}

/// Reads an image source: lists its files, decodes each once to check it (in parallel), settles the size and the
/// channels, and returns the lazy data set (file ids as inputs, classes as targets) with its preprocessing.
pub fn read_images(spec: &ImageSpec) -> Result<(Dataset, ImagePreprocessing)> {
    if let Some(a) = &spec.augment {
        a.check().map_err(|m| Error::new(m).at("augment"))?;
    }
    if let Some([h, w]) = spec.size
        && (h == 0 || w == 0 || h > 4096 || w > 4096)
    {
        return Err(Error::new(format!("expected [height, width] from 1 to 4096, found [{h}, {w}]")).at("size"));
    }
    if let Some(c) = spec.channels
        && c != 1
        && c != 3
    {
        return Err(Error::new(format!("expected 1 (grey) or 3 (RGB), found {c}")).at("channels"));
    }
    let path = &spec.path;
    let meta = std::fs::metadata(path).in_file(path)?;
    let listing = if meta.is_dir() {
        list_folder(path, spec.classes.as_deref())?
    } else {
        list_csv(spec, path)?
    };
    if listing.files.len() >= MAX_FILES {
        return Err(Error::new(format!(
            "{} images; graft reads at most {MAX_FILES} per source",
            listing.files.len()
        ))
        .in_file(path));
    }
    let checks: Vec<Result<Checked>> = decode_pool().install(|| {
        listing
            .files
            .par_iter()
            .map(|f| {
                let d = decode::decode_file(f)?;
                Ok(Checked {
                    width: d.image.width(),
                    height: d.image.height(),
                    colour: d.has_colour,
                })
            })
            .collect()
    });
    let mut bad: Vec<(usize, String)> = vec![];
    for (i, c) in checks.iter().enumerate() {
        match c {
            Err(e) => bad.push((i, e.message.clone())),
            Ok(c) if spec.channels == Some(1) && c.colour => {
                bad.push((i, "a colour image, but channels = 1 reads grey images".into()))
            }
            Ok(_) => {}
        }
    }
    let name = |i: usize| {
        let f = &listing.files[i];
        f.strip_prefix(if meta.is_dir() {
            path.as_path()
        } else {
            path.parent().unwrap_or(Path::new(""))
        })
        .unwrap_or(f)
        .display()
        .to_string()
    };
    if !bad.is_empty() && spec.on_error == OnError::Error {
        let shown: Vec<String> = bad.iter().take(5).map(|(i, m)| format!("{} ({m})", name(*i))).collect();
        let more = if bad.len() > 5 {
            format!(" and {} more", bad.len() - 5)
        } else {
            String::new()
        };
        return Err(Error::new(format!(
            "{} of {} images cannot be used: {}{more}; remove them, or set on_error = \"skip\" to train without them",
            bad.len(),
            listing.files.len(),
            shown.join(", ")
        ))
        .in_file(path));
    }
    let mut keep = vec![true; listing.files.len()];
    for (i, _) in &bad {
        keep[*i] = false;
    }
    if !bad.is_empty() {
        eprintln!(
            "{}: skipped {} of {} images that cannot be used (on_error = \"skip\"), first {}: {}",
            path.display(),
            bad.len(),
            listing.files.len(),
            name(bad[0].0),
            bad[0].1
        );
    }
    let good: Vec<&Checked> = checks
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .filter_map(|(c, _)| c.as_ref().ok())
        .collect();
    if good.is_empty() {
        return Err(Error::new("no usable images").in_file(path));
    }
    let size = match spec.size {
        Some(s) => s,
        None => {
            let first = (good[0].height, good[0].width);
            if let Some((i, c)) = checks
                .iter()
                .enumerate()
                .filter(|(i, _)| keep[*i])
                .filter_map(|(i, c)| c.as_ref().ok().map(|c| (i, c)))
                .find(|(_, c)| (c.height, c.width) != first)
            {
                let i0 = keep.iter().position(|k| *k).unwrap_or(0);
                return Err(Error::new(format!(
                    "the images differ in size ({} is {}×{}, {} is {}×{}): set size = [height, width] to resize \
                     them all",
                    name(i0),
                    first.1,
                    first.0,
                    name(i),
                    c.width,
                    c.height
                ))
                .in_file(path));
            }
            [first.0 as usize, first.1 as usize]
        }
    };
    let channels = spec
        .channels
        .unwrap_or(if good.iter().any(|c| c.colour) { 3 } else { 1 });
    let (mean, std) = spec.normalize.mean_std(channels)?;
    let preprocessing = ImagePreprocessing {
        size,
        channels,
        resize: spec.resize,
        mean,
        std,
    };
    let files: Vec<PathBuf> = listing
        .files
        .into_iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(f, _)| f)
        .collect();
    let labels: Vec<usize> = listing
        .labels
        .into_iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(l, _)| l)
        .collect();
    let n = files.len();
    let ids = Array::new(vec![n, 1], (0..n).map(|i| i as f32).collect())?;
    let mut ds = Dataset::new(
        ids,
        Some(Targets::Classes {
            labels,
            names: listing.classes,
        }),
    )?;
    ds.images = Some(Arc::new(ImageRows {
        files: Arc::new(files),
        preprocessing: preprocessing.clone(),
        augment: spec.augment.clone(),
    }));
    Ok((ds, preprocessing))
}

#[cfg(test)]
mod tests;
