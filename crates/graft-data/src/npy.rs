//! NumPy `.npy` files: the simplest way to bring arrays prepared in Python into graft.
//!
//! Inputs of any numeric dtype are converted to `f32`; labels must be whole, non-negative numbers.
//! The header is checked here before `ndarray-npy` reads the data, so that errors can name the
//! dtype found and so that a corrupt shape is refused before anything is allocated for it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use ndarray_npy::{ReadNpyError, ReadNpyExt, ReadableElement, WriteNpyError, WriteNpyExt};

use super::array::Array;
use super::dataset::{DataSource, Dataset, Targets, infer_num_classes, numbered_class_names};
use crate::error::{Context, Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The numeric dtypes read, each with its decoded values.
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

/// Runs `$body` with `$v` bound to the typed vector, whatever the dtype.
macro_rules! each_dtype {
    ($values:expr, $v:ident => $body:expr) => {
        match $values {
            Values::F32($v) => $body,
            Values::F64($v) => $body,
            Values::I8($v) => $body,
            Values::I16($v) => $body,
            Values::I32($v) => $body,
            Values::I64($v) => $body,
            Values::U8($v) => $body,
            Values::U16($v) => $body,
            Values::U32($v) => $body,
            Values::U64($v) => $body,
        }
    };
}

impl Values {
    fn is_integer(&self) -> bool {
        !matches!(self, Values::F32(_) | Values::F64(_))
    }
}

/// Reads a `.npy` array of any numeric dtype (float32/64, signed or unsigned 8–64-bit integers,
/// either byte order, C or Fortran order) as `f32`. The first axis is taken as the sample axis.
pub fn read_npy_f32(path: impl AsRef<Path>) -> Result<Array> {
    let path = path.as_ref();
    let raw = read_raw(path)?;
    if raw.shape.is_empty() {
        return Err(Error::new("expected an array with a sample axis, found a 0-dimensional array").in_file(path));
    }
    let data = each_dtype!(raw.values, v => to_f32(v));
    Array::new(raw.shape, data).in_file(path)
}

/// Reads class labels: an integer array of shape `[n]` (or `[n, 1]`), or a float array of that
/// shape holding whole numbers. Negative or fractional values are errors naming the file and row.
pub fn read_npy_labels(path: impl AsRef<Path>) -> Result<Vec<usize>> {
    let path = path.as_ref();
    let raw = read_raw(path)?;
    if !is_label_shaped(&raw.shape) {
        return Err(Error::new(format!("expected labels of shape [n], found shape {:?}", raw.shape)).in_file(path));
    }
    each_dtype!(raw.values, v => to_labels(&v, path))
}

/// Writes `array` as a little-endian float32 `.npy` file. The data go to a temporary file in the
/// same directory which is then renamed over `path`, so readers never see a half-written file.
pub fn write_npy_f32(path: impl AsRef<Path>, array: &Array) -> Result<()> {
    let path = path.as_ref();
    array.check().in_file(path)?;
    let view = ArrayViewD::from_shape(IxDyn(&array.shape), &array.data)
        .map_err(|e| Error::new(format!("cannot view the array as shape {:?}: {e}", array.shape)).in_file(path))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::new("not a file path").in_file(path))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Unique per process and call, so concurrent writers never share a temporary file.
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let temp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));

    let written = write_to(&temp, &view).and_then(|()| std::fs::rename(&temp, path).map_err(WriteNpyError::Io));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        match e {
            WriteNpyError::Io(e) => Error::io(path, e),
            other => Error::new(format!("cannot write: {other}")).in_file(path),
        }
    })
}

fn write_to(temp: &Path, view: &ArrayViewD<f32>) -> std::result::Result<(), WriteNpyError> {
    let mut writer = BufWriter::new(File::create(temp)?);
    view.write_npy(&mut writer)?;
    writer.flush()?;
    // Make the data durable before the rename makes it visible.
    writer.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// A pair of `.npy` files (inputs and optional targets) as a [`DataSource`].
///
/// Targets are decided by `y`'s dtype and shape, never by its values:
/// - an integer array of shape `[n]` or `[n, 1]` holds class labels, named `"0"` … `"k-1"`
///   (k = largest label + 1) unless `classes` gives the names;
/// - a float array of that shape holds class labels only when `classes` is given (it must then hold
///   whole numbers), and otherwise regression targets, read as `[n, 1]`;
/// - any other array `[n, k, …]` (float or integer) holds values: regression outputs, soft labels
///   or multi-label indicators.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NpySource {
    /// Inputs, `[n, …]`.
    pub x: PathBuf,
    /// Targets, `[n]` or `[n, k]`; `None` for unlabelled data.
    pub y: Option<PathBuf>,
    /// Class names, in class-id order.
    pub classes: Option<Vec<String>>,
    /// Per-sample loss weights, `[n]`.
    pub sample_weight: Option<PathBuf>,
}

impl NpySource {
    /// Inputs only; add targets with [`NpySource::with_targets`].
    pub fn new(x: impl Into<PathBuf>) -> Self {
        NpySource {
            x: x.into(),
            y: None,
            classes: None,
            sample_weight: None,
        }
    }

    /// Sets the per-sample loss weights file.
    pub fn with_sample_weight(mut self, w: impl Into<PathBuf>) -> Self {
        self.sample_weight = Some(w.into());
        self
    }

    /// Sets the targets file.
    pub fn with_targets(mut self, y: impl Into<PathBuf>) -> Self {
        self.y = Some(y.into());
        self
    }

    /// Sets the class names (and so the number of classes).
    pub fn with_classes(mut self, names: Vec<String>) -> Self {
        self.classes = Some(names);
        self
    }

    fn read_targets(&self, y: &Path, n: usize) -> Result<Targets> {
        let raw = read_raw(y)?;
        let found = raw.shape.first().copied();
        if found != Some(n) {
            let found = found.map_or("no sample axis".to_string(), |m| format!("{m} samples"));
            return Err(Error::new(format!("targets have {found} but {} has {n}", self.x.display())).in_file(y));
        }
        let labels_wanted = raw.values.is_integer() || self.classes.is_some();
        if is_label_shaped(&raw.shape) && labels_wanted {
            let labels = each_dtype!(raw.values, v => to_labels(&v, y))?;
            let names = match &self.classes {
                Some(names) => names.clone(),
                None => numbered_class_names(infer_num_classes(&labels).in_file(y)?),
            };
            return Ok(Targets::Classes { labels, names });
        }
        if self.classes.is_some() {
            return Err(Error::new(format!(
                "class names were given, but the targets have shape {:?}; class labels need shape [n]",
                raw.shape
            ))
            .in_file(y));
        }
        let mut shape = raw.shape;
        if shape.len() == 1 {
            shape.push(1);
        }
        let data = each_dtype!(raw.values, v => to_f32(v));
        Ok(Targets::Values(Array::new(shape, data).in_file(y)?))
    }
}

impl DataSource for NpySource {
    fn load(&self) -> Result<Dataset> {
        let inputs = read_npy_f32(&self.x)?;
        let targets = match &self.y {
            Some(y) => Some(self.read_targets(y, inputs.len())?),
            None => None,
        };
        let weights = match &self.sample_weight {
            Some(path) => {
                let w = read_npy_f32(path)?;
                if !matches!(w.shape.as_slice(), [_] | [_, 1]) {
                    return Err(
                        Error::new(format!("sample weights must be shaped [n], found {:?}", w.shape)).in_file(path),
                    );
                }
                Some(w.data)
            }
            None => None,
        };
        let has_weights = weights.is_some();
        let dataset = Dataset {
            inputs,
            targets,
            weights,
            extra_inputs: vec![],
            input_names: vec![],
            tasks: vec![],
            label_names: vec![],
            images: None,
        };
        dataset.validate().map_err(|e| {
            let file = match (&e.location, &self.sample_weight) {
                (Some(l), Some(w)) if has_weights && l.starts_with("sample_weight") => w.as_path(),
                _ => self.y.as_deref().unwrap_or(&self.x),
            };
            e.in_file(file)
        })?;
        Ok(dataset)
    }

    fn describe(&self) -> String {
        let mut text = format!("npy inputs {}", self.x.display());
        if let Some(y) = &self.y {
            text.push_str(&format!(", targets {}", y.display()));
        }
        if let Some(names) = &self.classes {
            text.push_str(&format!(", {} named classes", names.len()));
        }
        text
    }
}

/// `[n]` or `[n, 1]`: one value per sample.
fn is_label_shaped(shape: &[usize]) -> bool {
    matches!(shape, [_] | [_, 1])
}

/// An element type we convert from.
trait Element: ReadableElement + Copy + std::fmt::Display {
    /// Bytes per element, to check the file size against the header's shape.
    const SIZE: usize = std::mem::size_of::<Self>();
    fn to_f32(self) -> f32;
    /// The value as a class id, or why it cannot be one.
    fn to_label(self) -> std::result::Result<usize, String>;
}

macro_rules! integer_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn to_label(self) -> std::result::Result<usize, String> {
                usize::try_from(self).map_err(|_| {
                    if (self as i128) < 0 {
                        format!("label {self} is negative")
                    } else {
                        format!("label {self} is too large")
                    }
                })
            }
        }
    )*};
}
integer_element!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! float_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn to_label(self) -> std::result::Result<usize, String> {
                // Beyond 2^53 a float no longer tells neighbouring integers apart.
                const EXACT: f64 = 9_007_199_254_740_992.0;
                let v = self as f64;
                if !v.is_finite() || v.fract() != 0.0 {
                    Err(format!("label {self} is not a whole number"))
                } else if v < 0.0 {
                    Err(format!("label {self} is negative"))
                } else if v > EXACT {
                    Err(format!("label {self} is too large"))
                } else {
                    Ok(v as usize)
                }
            }
        }
    )*};
}
float_element!(f32, f64);

fn to_f32<T: Element>(values: Vec<T>) -> Vec<f32> {
    values.into_iter().map(T::to_f32).collect()
}

fn to_labels<T: Element>(values: &[T], path: &Path) -> Result<Vec<usize>> {
    values
        .iter()
        .enumerate()
        .map(|(row, &v)| {
            v.to_label()
                .map_err(|msg| Error::new(msg).at(format!("row {row}")).in_file(path))
        })
        .collect()
}

/// A whole `.npy` file, decoded but not yet converted.
struct RawNpy {
    shape: Vec<usize>,
    values: Values,
}

/// What we need from the header before handing the file to `ndarray-npy`.
struct Header {
    descr: String,
    shape: Vec<usize>,
    /// Where the data start.
    data_offset: u64,
}

fn read_raw(path: &Path) -> Result<RawNpy> {
    let mut file = File::open(path).in_file(path)?;
    let header = read_header(&mut file, path)?;
    let file_len = file.metadata().in_file(path)?.len();
    file.seek(SeekFrom::Start(0)).in_file(path)?;
    let reader = BufReader::new(file);

    macro_rules! read {
        ($t:ty, $variant:ident) => {{
            check_data_size::<$t>(&header, file_len).in_file(path)?;
            let (shape, data) = read_as::<$t>(reader).map_err(|e| read_error(path, e))?;
            RawNpy {
                shape,
                values: Values::$variant(data),
            }
        }};
    }
    let body = header.descr.strip_prefix(['<', '>', '|', '=']).unwrap_or(&header.descr);
    Ok(match body {
        "f4" => read!(f32, F32),
        "f8" => read!(f64, F64),
        "i1" | "b" => read!(i8, I8),
        "i2" => read!(i16, I16),
        "i4" => read!(i32, I32),
        "i8" => read!(i64, I64),
        "u1" | "B" => read!(u8, U8),
        "u2" => read!(u16, U16),
        "u4" => read!(u32, U32),
        "u8" => read!(u64, U64),
        _ => return Err(unsupported_dtype(&header.descr).in_file(path)),
    })
}

fn unsupported_dtype(descr: &str) -> Error {
    let body = descr.trim_start_matches(['<', '>', '|', '=']);
    let kind = match body.chars().next() {
        Some('b') | Some('?') => " (bool)",
        Some('f') | Some('e') => " (a float width other than 32 or 64 bits)",
        Some('c') => " (complex)",
        Some('U') | Some('S') | Some('a') => " (strings)",
        Some('O') => " (Python objects)",
        Some('M') | Some('m') => " (dates or times)",
        Some('[') => " (a structured array)",
        _ => "",
    };
    Error::new(format!(
        "unsupported dtype '{descr}'{kind}; expected float32, float64 or an 8- to 64-bit integer type"
    ))
}

/// Refuses files shorter or longer than the header's shape says, before allocating for it.
fn check_data_size<T: Element>(header: &Header, file_len: u64) -> Result<()> {
    let expected = header
        .shape
        .iter()
        .try_fold(T::SIZE as u128, |acc, &d| acc.checked_mul(d as u128))
        .ok_or_else(|| Error::new(format!("the shape {:?} in the header is too large", header.shape)))?;
    let found = file_len.saturating_sub(header.data_offset) as u128;
    if found < expected {
        return Err(Error::new(format!(
            "the file is truncated: shape {:?} of '{}' needs {expected} bytes of data, found {found}",
            header.shape, header.descr
        )));
    }
    if found > expected {
        return Err(Error::new(format!(
            "the file has {} bytes after the data of shape {:?} of '{}'",
            found - expected,
            header.shape,
            header.descr
        )));
    }
    Ok(())
}

fn read_as<T: Element>(reader: impl Read) -> std::result::Result<(Vec<usize>, Vec<T>), ReadNpyError> {
    let array = ArrayD::<T>::read_npy(reader)?;
    let shape = array.shape().to_vec();
    // Fortran-ordered files come back column-major; iterate to get row-major order.
    let data = if array.is_standard_layout() {
        array.into_raw_vec_and_offset().0
    } else {
        array.iter().copied().collect()
    };
    Ok((shape, data))
}

fn read_error(path: &Path, err: ReadNpyError) -> Error {
    let message = match err {
        ReadNpyError::Io(e) => return Error::io(path, e),
        ReadNpyError::ParseHeader(e) => format!("invalid .npy header: {e}"),
        ReadNpyError::WrongDescriptor(descr) => {
            return unsupported_dtype(descr.to_string().trim_matches(['\'', '"'])).in_file(path);
        }
        ReadNpyError::MissingData => "the file is truncated: it ends before all the data in its header".to_string(),
        ReadNpyError::ExtraBytes(extra) => {
            format!("the file has {extra} bytes after the data in its header")
        }
        other => format!("cannot read: {other}"),
    };
    Error::new(message).in_file(path)
}

/// Reads the magic, version and header dictionary, leaving the file somewhere after them.
fn read_header(file: &mut File, path: &Path) -> Result<Header> {
    let bad = |msg: &str| Error::new(msg).in_file(path);
    let mut start = Vec::with_capacity(12);
    (&mut *file).take(10).read_to_end(&mut start).in_file(path)?;
    if start.len() < MAGIC.len() || &start[..MAGIC.len()] != MAGIC {
        return Err(bad(
            "not a .npy file: it does not start with the \\x93NUMPY magic string",
        ));
    }
    if start.len() < 10 {
        return Err(bad("the file is truncated inside its .npy header"));
    }
    let (major, minor) = (start[6], start[7]);
    let (header_len, prefix_len) = match major {
        1 => (u16::from_le_bytes([start[8], start[9]]) as u64, 10),
        2 | 3 => {
            let mut rest = [0u8; 2];
            file.read_exact(&mut rest)
                .map_err(|_| bad("the file is truncated inside its .npy header"))?;
            (u32::from_le_bytes([start[8], start[9], rest[0], rest[1]]) as u64, 12)
        }
        _ => {
            return Err(bad(&format!("unsupported .npy format version {major}.{minor}")));
        }
    };
    let mut text = Vec::new();
    (&mut *file).take(header_len).read_to_end(&mut text).in_file(path)?;
    if (text.len() as u64) < header_len {
        return Err(bad("the file is truncated inside its .npy header"));
    }
    let text = String::from_utf8_lossy(&text);
    let descr = dict_value(&text, "descr")
        .map(describe_descr)
        .ok_or_else(|| bad("invalid .npy header: no 'descr' entry"))?;
    let shape = dict_value(&text, "shape")
        .and_then(parse_shape)
        .ok_or_else(|| bad("invalid .npy header: no readable 'shape' entry"))?;
    Ok(Header {
        descr,
        shape,
        data_offset: prefix_len + header_len,
    })
}

/// The text after `'key':` in the header's Python dict literal.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))?;
    text[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')
        .map(str::trim_start)
}

/// A dtype string such as `<f4`, or a shortened rendering of a structured dtype.
fn describe_descr(value: &str) -> String {
    if let Some(quote) = value.chars().next().filter(|&c| c == '\'' || c == '"') {
        let body = &value[1..];
        if let Some(end) = body.find(quote) {
            return body[..end].to_string();
        }
    }
    let end = value.find(']').map_or(value.len(), |i| i + 1);
    value[..end].chars().take(60).collect()
}

/// Parses `(3, 4)`, `(5,)` or `()`.
fn parse_shape(value: &str) -> Option<Vec<usize>> {
    let inner = value.strip_prefix('(')?;
    let inner = &inner[..inner.find(')')?];
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    trait WriteArray {
        fn write_array<T: WritableElement, D: ndarray::Dimension>(
            &self,
            name: &str,
            a: &ndarray::Array<T, D>,
        ) -> PathBuf;
    }

    impl WriteArray for TempDir {
        fn write_array<T: WritableElement, D: ndarray::Dimension>(
            &self,
            name: &str,
            a: &ndarray::Array<T, D>,
        ) -> PathBuf {
            let path = self.file(name);
            write_npy(&path, a).unwrap();
            path
        }
    }
    use ndarray::{Array1, Array2, Array3, ShapeBuilder};
    use ndarray_npy::{WritableElement, write_npy};

    /// A hand-made version 1.0 `.npy` file, for dtypes and layouts ndarray-npy does not write.
    fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        let unpadded = 10 + header.len() + 1;
        header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
        header.push('\n');
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn reads_every_numeric_dtype_as_f32() {
        let dir = TempDir::new("npy");
        let f32s = Array2::from_shape_vec((2, 3), vec![0.5f32, 1.0, 2.0, 3.0, 4.0, 5.5]).unwrap();
        let a = read_npy_f32(dir.write_array("f32.npy", &f32s)).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![0.5, 1.0, 2.0, 3.0, 4.0, 5.5]);

        let expected = vec![1.0f32, 2.0, 3.0, 4.0];
        let f64s = Array1::from(vec![1.0f64, 2.0, 3.0, 4.0]);
        assert_eq!(read_npy_f32(dir.write_array("f64.npy", &f64s)).unwrap().data, expected);
        let i32s = Array1::from(vec![1i32, 2, 3, 4]);
        assert_eq!(read_npy_f32(dir.write_array("i32.npy", &i32s)).unwrap().data, expected);
        let i64s = Array1::from(vec![1i64, 2, 3, 4]);
        assert_eq!(read_npy_f32(dir.write_array("i64.npy", &i64s)).unwrap().data, expected);
        let u16s = Array1::from(vec![1u16, 2, 3, 4]);
        assert_eq!(read_npy_f32(dir.write_array("u16.npy", &u16s)).unwrap().data, expected);
        let i8s = Array1::from(vec![-1i8, 2, 3, 4]);
        assert_eq!(
            read_npy_f32(dir.write_array("i8.npy", &i8s)).unwrap().data,
            vec![-1.0, 2.0, 3.0, 4.0]
        );

        let images = Array3::from_shape_fn((2, 2, 2), |(i, j, k)| (i * 4 + j * 2 + k) as u8 * 30);
        let a = read_npy_f32(dir.write_array("u8.npy", &images)).unwrap();
        assert_eq!(a.shape, vec![2, 2, 2]);
        assert_eq!(a.row(1), &[120.0, 150.0, 180.0, 210.0]);
    }

    #[test]
    fn fortran_order_and_big_endian_come_back_row_major() {
        let dir = TempDir::new("npy");
        let fortran = Array2::from_shape_vec((2, 3).f(), vec![1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0]).unwrap();
        let a = read_npy_f32(dir.write_array("fortran.npy", &fortran)).unwrap();
        assert_eq!(a.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

        let mut data = 1.5f64.to_be_bytes().to_vec();
        data.extend_from_slice(&(-2.0f64).to_be_bytes());
        let path = dir.write("big.npy", npy_bytes(">f8", "(2,)", &data));
        assert_eq!(read_npy_f32(path).unwrap().data, vec![1.5, -2.0]);
    }

    #[test]
    fn unsupported_dtypes_name_file_and_dtype() {
        let dir = TempDir::new("npy");
        let path = dir.write_array("bool.npy", &Array1::from(vec![true, false]));
        let err = read_npy_f32(&path).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(path.as_path()));
        assert!(err.message.contains("'|b1' (bool)"), "{}", err.message);

        let path = dir.write("half.npy", npy_bytes("<f2", "(2,)", &[0; 4]));
        let err = read_npy_f32(&path).unwrap_err();
        assert!(
            err.to_string().contains("half.npy") && err.message.contains("'<f2'"),
            "{err}"
        );

        let path = dir.write("scalar.npy", npy_bytes("<f4", "()", &[0; 4]));
        assert!(read_npy_f32(&path).unwrap_err().message.contains("0-dimensional"));
    }

    #[test]
    fn broken_files_are_errors_naming_the_file() {
        let dir = TempDir::new("npy");
        let missing = dir.file("missing.npy");
        let err = read_npy_f32(&missing).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(missing.as_path()));

        let path = dir.write("text.npy", b"hello, this is not numpy");
        let err = read_npy_f32(&path).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(path.as_path()));
        assert!(err.message.contains("magic"), "{}", err.message);
        assert!(
            read_npy_f32(dir.write("empty.npy", b""))
                .unwrap_err()
                .message
                .contains("magic")
        );

        let truncated = npy_bytes("<f4", "(4,)", &[0; 12]);
        let err = read_npy_f32(dir.write("short.npy", &truncated)).unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
        let header_only = &truncated[..20];
        let err = read_npy_f32(dir.write("cut.npy", header_only)).unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
        let long = npy_bytes("<f4", "(1,)", &[0; 8]);
        assert!(
            read_npy_f32(dir.write("long.npy", &long))
                .unwrap_err()
                .message
                .contains("4 bytes after")
        );

        // A corrupt shape must be refused, not allocated.
        let huge = npy_bytes("<f8", "(1000000000000, 1000000)", &[0; 8]);
        let err = read_npy_f32(dir.write("huge.npy", &huge)).unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
        let overflow = npy_bytes("<f8", "(18446744073709551615, 18446744073709551615)", &[]);
        assert!(read_npy_f32(dir.write("overflow.npy", &overflow)).is_err());
    }

    #[test]
    fn labels_from_integers_and_whole_floats() {
        let dir = TempDir::new("npy");
        let ints = Array1::from(vec![0i64, 3, 1, 2]);
        assert_eq!(
            read_npy_labels(dir.write_array("i.npy", &ints)).unwrap(),
            vec![0, 3, 1, 2]
        );
        let column = Array2::from_shape_vec((3, 1), vec![2u8, 0, 1]).unwrap();
        assert_eq!(
            read_npy_labels(dir.write_array("col.npy", &column)).unwrap(),
            vec![2, 0, 1]
        );
        let floats = Array1::from(vec![1.0f64, 0.0, 2.0]);
        assert_eq!(
            read_npy_labels(dir.write_array("f.npy", &floats)).unwrap(),
            vec![1, 0, 2]
        );
    }

    #[test]
    fn bad_labels_name_file_and_row() {
        let dir = TempDir::new("npy");
        let path = dir.write_array("neg.npy", &Array1::from(vec![0i32, 1, -1]));
        let err = read_npy_labels(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: row 2: label -1 is negative", path.display())
        );

        let path = dir.write_array("frac.npy", &Array1::from(vec![0.0f32, 1.5]));
        let err = read_npy_labels(&path).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("row 1"));
        assert!(err.message.contains("1.5 is not a whole number"), "{}", err.message);

        let path = dir.write_array("nan.npy", &Array1::from(vec![f64::NAN]));
        assert_eq!(read_npy_labels(&path).unwrap_err().location.as_deref(), Some("row 0"));

        let path = dir.write_array("matrix.npy", &Array2::<i64>::zeros((3, 2)));
        assert!(read_npy_labels(&path).unwrap_err().message.contains("shape [n]"));
    }

    #[test]
    fn write_round_trips_atomically() {
        let dir = TempDir::new("npy");
        let path = dir.file("out.npy");
        let a = Array::new(vec![2, 1, 3], vec![0.0, -1.5, 2.25, 1e-3, 7.0, f32::MAX]).unwrap();
        write_npy_f32(&path, &a).unwrap();
        assert_eq!(read_npy_f32(&path).unwrap(), a);
        // Overwrites in place and leaves no temporary files behind.
        let b = Array::new(vec![1, 2], vec![3.0, 4.0]).unwrap();
        write_npy_f32(&path, &b).unwrap();
        assert_eq!(read_npy_f32(&path).unwrap(), b);
        let names: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.npy")]);

        let nowhere = dir.file("no-such-dir").join("out.npy");
        assert_eq!(
            write_npy_f32(&nowhere, &a).unwrap_err().file.as_deref(),
            Some(nowhere.as_path())
        );
        let broken = Array {
            shape: vec![2, 2],
            data: vec![1.0],
        };
        assert!(write_npy_f32(dir.file("broken.npy"), &broken).is_err());
    }

    #[test]
    fn source_with_integer_labels_gives_classes() {
        let dir = TempDir::new("npy");
        let x = dir.write_array("x.npy", &Array2::<f32>::zeros((4, 3)));
        let y = dir.write_array("y.npy", &Array1::from(vec![0i64, 2, 1, 2]));
        let source = NpySource::new(&x).with_targets(&y);
        let d = source.load().unwrap();
        assert_eq!(d.inputs.shape, vec![4, 3]);
        assert_eq!(d.labels(), Some(&[0, 2, 1, 2][..]));
        assert_eq!(d.class_names().unwrap(), &["0", "1", "2"]);
        assert!(source.describe().contains("y.npy"));

        let named = source
            .clone()
            .with_classes(vec!["cat".into(), "dog".into(), "eel".into(), "fox".into()]);
        assert_eq!(named.load().unwrap().num_classes(), Some(4));
        let too_few = source.with_classes(vec!["cat".into(), "dog".into()]);
        let err = too_few.load().unwrap_err();
        assert_eq!(err.file.as_deref(), Some(y.as_path()));
        assert_eq!(err.message, "label 2 at row 1 is outside the 2 classes");
    }

    #[test]
    fn source_with_float_targets_gives_values() {
        let dir = TempDir::new("npy");
        let x = dir.write_array("x.npy", &Array2::<f64>::ones((3, 2)));
        let soft = dir.write_array(
            "soft.npy",
            &Array2::from_shape_vec((3, 2), vec![0.1f32, 0.9, 0.5, 0.5, 1.0, 0.0]).unwrap(),
        );
        let d = NpySource::new(&x).with_targets(&soft).load().unwrap();
        assert_eq!(d.values().unwrap().shape, vec![3, 2]);
        assert_eq!(d.num_classes(), None);

        // Whole-valued floats stay regression targets unless class names say otherwise.
        let y = dir.write_array("y.npy", &Array1::from(vec![25.0f64, 151.0, 75.0]));
        let d = NpySource::new(&x).with_targets(&y).load().unwrap();
        assert_eq!(d.values().unwrap().shape, vec![3, 1]);
        let small = dir.write_array("small.npy", &Array1::from(vec![1.0f64, 0.0, 1.0]));
        let d = NpySource::new(&x)
            .with_targets(&small)
            .with_classes(vec!["a".into(), "b".into()])
            .load()
            .unwrap();
        assert_eq!(d.labels(), Some(&[1, 0, 1][..]));
        let err = NpySource::new(&x)
            .with_targets(&soft)
            .with_classes(vec!["a".into()])
            .load()
            .unwrap_err();
        assert!(err.message.contains("class labels need shape [n]"), "{}", err.message);
    }

    #[test]
    fn source_errors_name_the_file() {
        let dir = TempDir::new("npy");
        let x = dir.write_array("x.npy", &Array2::<f32>::zeros((4, 3)));
        let y = dir.write_array("y.npy", &Array1::from(vec![0i64, 1, 1]));
        let err = NpySource::new(&x).with_targets(&y).load().unwrap_err();
        assert_eq!(err.file.as_deref(), Some(y.as_path()));
        assert!(
            err.message.contains("targets have 3 samples") && err.message.contains("x.npy"),
            "{}",
            err.message
        );

        let missing = dir.file("nope.npy");
        assert_eq!(
            NpySource::new(&missing).load().unwrap_err().file.as_deref(),
            Some(missing.as_path())
        );

        let huge = dir.write_array("huge.npy", &Array1::from(vec![0i64, 1, 1, 5_000_000_000]));
        let err = NpySource::new(&x).with_targets(&huge).load().unwrap_err();
        assert_eq!(err.location.as_deref(), Some("row 3"));
        assert_eq!(err.file.as_deref(), Some(huge.as_path()));
        assert!(NpySource::new(&x).load().unwrap().targets.is_none());
    }
}
