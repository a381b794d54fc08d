//! An image data source: the files of a folder with one sub-folder per class (or of a CSV of file paths and
//! labels), each decoded once to check it (a bad file is named, or skipped when asked, before any training), read
//! into a lazy data set of file ids with the [`ImagePreprocessing`] that the decoding pool applies per batch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::image::{
    Augment, Fit, IMAGE_EXTENSIONS, ImagePreprocessing, ImageRows, MAX_FILES, decode, decode_pool, is_image,
};
use crate::{Array, Dataset, Targets};

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
    /// `"unit"` (0–1, the default), `"imagenet"`, or `{ mean, std }`; a model with a pretrained backbone supplies
    /// its own when this is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
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
    /// Fills what the spec leaves out with the input a pretrained model expects: `size`, RGB and its
    /// normalization.
    pub fn with_model_defaults(mut self, size: [usize; 2], mean: &[f32], std: &[f32]) -> Self {
        self.size.get_or_insert(size);
        self.channels.get_or_insert(mean.len());
        self.normalize.get_or_insert(Normalize::MeanStd {
            mean: mean.to_vec(),
            std: std.to_vec(),
        });
        self
    }

    pub fn new(path: impl Into<PathBuf>) -> Self {
        ImageSpec {
            path: path.into(),
            size: None,
            channels: None,
            resize: Fit::default(),
            normalize: None,
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

/// torchvision's ImageNet statistics per RGB channel (`normalize = "imagenet"`, and ResNet-18's input).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

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

/// The files of a source and their classes.
struct Listing {
    files: Vec<PathBuf>,
    labels: Vec<usize>,
    classes: Vec<String>,
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
    let (mean, std) = spec.normalize.clone().unwrap_or_default().mean_std(channels)?;
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
