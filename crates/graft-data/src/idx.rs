//! IDX files, the format MNIST, Fashion-MNIST and EMNIST are distributed in.
//!
//! An IDX file is a 4-byte magic `00 00 <type> <ndims>`, then `ndims` big-endian `u32` dimensions,
//! then the values in row-major order, big-endian. Files are often gzipped; a gzip file is recognised
//! by its magic bytes (`1f 8b`), whatever its name.
//!
//! The header is checked against the file length before anything is allocated for the data, so a
//! corrupt or hostile header is refused rather than trusted; for gzip files, whose decompressed size
//! is unknown in advance, the data are decoded in chunks and memory grows only with what is read.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::array::Array;
use super::dataset::{DataSource, Dataset, Targets, infer_num_classes, numbered_class_names};
use crate::error::{Context, Error, Result};

/// Pixel values of 8-bit images are divided by this unless told otherwise.
pub const DEFAULT_SCALE: f32 = 255.0;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Deflate expands data by at most about 1032:1, so a gzip file cannot hold more than this many
/// times its own size; a header that claims more is refused before reading on.
const MAX_GZIP_RATIO: u64 = 1032;
/// How much trailing data after a gzip file's values is counted before saying "at least".
const TRAILING_COUNT_LIMIT: u64 = 1 << 20;
/// Bytes decoded at a time: a multiple of every element size.
const CHUNK: usize = 1 << 16;

/// The element types of the IDX format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementType {
    U8,
    I8,
    I16,
    I32,
    F32,
    F64,
}

impl ElementType {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x08 => ElementType::U8,
            0x09 => ElementType::I8,
            0x0B => ElementType::I16,
            0x0C => ElementType::I32,
            0x0D => ElementType::F32,
            0x0E => ElementType::F64,
            _ => return None,
        })
    }

    /// Bytes per value.
    fn size(self) -> usize {
        match self {
            ElementType::U8 | ElementType::I8 => 1,
            ElementType::I16 => 2,
            ElementType::I32 | ElementType::F32 => 4,
            ElementType::F64 => 8,
        }
    }

    /// Appends the values in `bytes` (a whole number of big-endian elements) to `out`.
    fn decode_into<T: Value>(self, bytes: &[u8], out: &mut Vec<T>) {
        fn be<const N: usize>(chunk: &[u8]) -> [u8; N] {
            chunk.try_into().expect("chunks_exact yields N bytes")
        }
        match self {
            ElementType::U8 => out.extend(bytes.iter().map(|&b| T::from_f64(f64::from(b)))),
            ElementType::I8 => out.extend(bytes.iter().map(|&b| T::from_f64(f64::from(b as i8)))),
            ElementType::I16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| T::from_f64(f64::from(i16::from_be_bytes(be(c))))),
            ),
            ElementType::I32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| T::from_f64(f64::from(i32::from_be_bytes(be(c))))),
            ),
            ElementType::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| T::from_f64(f64::from(f32::from_be_bytes(be(c))))),
            ),
            ElementType::F64 => out.extend(bytes.chunks_exact(8).map(|c| T::from_f64(f64::from_be_bytes(be(c))))),
        }
    }
}

/// What values are decoded into: `f32` for inputs, `f64` (exact for every IDX type) for labels.
trait Value: Copy {
    fn from_f64(v: f64) -> Self;
}

impl Value for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Value for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// Reads an IDX file (MNIST format; gzip is decompressed transparently, recognised by its magic
/// bytes rather than the file name): magic `00 00 <type> <ndims>`, big-endian `u32` dims, then the
/// data. Supported types: `0x08` u8, `0x09` i8, `0x0B` i16, `0x0C` i32, `0x0D` f32, `0x0E` f64.
/// Returns the dims and the values as `f32`. Every error names `path`.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let (dims, _, values) = read_values::<f32>(path).in_file(path)?;
    Ok((dims, values))
}

/// An IDX image file `[n, rows, cols]` and, optionally, an IDX label file `[n]` as a [`Dataset`].
///
/// Inputs are `[n, 1, rows, cols]` (channels-first; a 4-D file `[n, channels, rows, cols]` is taken
/// as it is), divided by `scale`. Labels must be whole, non-negative numbers; the classes are named
/// `"0"` … `"k-1"` with k = largest label + 1, unless `classes` gives the names (and so the number).
#[derive(Debug, Clone, PartialEq)]
pub struct IdxSource {
    /// The image file, `[n, rows, cols]` or `[n, channels, rows, cols]`.
    pub images: PathBuf,
    /// The label file, `[n]`; `None` for unlabelled images.
    pub labels: Option<PathBuf>,
    /// Pixel values are divided by this ([`DEFAULT_SCALE`], 255, for 8-bit images).
    pub scale: f32,
    /// Class names, in class-id order.
    pub classes: Option<Vec<String>>,
}

impl IdxSource {
    /// Images only, scaled by 1/255; add labels with [`IdxSource::with_labels`].
    pub fn new(images: impl Into<PathBuf>) -> Self {
        IdxSource {
            images: images.into(),
            labels: None,
            scale: DEFAULT_SCALE,
            classes: None,
        }
    }

    /// Sets the label file.
    pub fn with_labels(mut self, labels: impl Into<PathBuf>) -> Self {
        self.labels = Some(labels.into());
        self
    }

    /// Sets the divisor applied to every pixel value.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = scale;
        self
    }

    /// Sets the class names (and so the number of classes).
    pub fn with_classes(mut self, names: Vec<String>) -> Self {
        self.classes = Some(names);
        self
    }

    fn read_inputs(&self) -> Result<Array> {
        let path = &self.images;
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::new(format!(
                "the image scale must be a positive finite number, found {}",
                self.scale
            ))
            .in_file(path));
        }
        let (dims, mut data) = read_idx(path)?;
        let shape = match dims.as_slice() {
            &[n, rows, cols] => vec![n, 1, rows, cols],
            [_, _, _, _] => dims,
            _ => {
                return Err(Error::new(format!(
                    "expected images shaped [n, rows, cols] or [n, channels, rows, cols], found dims {dims:?}"
                ))
                .in_file(path));
            }
        };
        if self.scale != 1.0 {
            data.iter_mut().for_each(|v| *v /= self.scale);
        }
        Array::new(shape, data).in_file(path)
    }

    fn read_targets(&self, path: &Path, n: usize) -> Result<Targets> {
        let (dims, _, values) = read_values::<f64>(path).in_file(path)?;
        if !matches!(dims.as_slice(), [_] | [_, 1]) {
            return Err(Error::new(format!("expected labels shaped [n], found dims {dims:?}")).in_file(path));
        }
        if values.len() != n {
            return Err(Error::new(format!(
                "the label file has {} labels but the image file {} has {n} images",
                values.len(),
                self.images.display()
            ))
            .in_file(path));
        }
        let labels = values
            .iter()
            .enumerate()
            .map(|(i, &v)| to_label(v).map_err(|m| Error::new(m).at(format!("label {i}"))))
            .collect::<Result<Vec<usize>>>()
            .in_file(path)?;
        let names = match &self.classes {
            Some(names) => names.clone(),
            None => numbered_class_names(infer_num_classes(&labels).in_file(path)?),
        };
        Ok(Targets::Classes { labels, names })
    }
}

impl DataSource for IdxSource {
    fn load(&self) -> Result<Dataset> {
        let inputs = self.read_inputs()?;
        let targets = match &self.labels {
            Some(path) => Some(self.read_targets(path, inputs.len())?),
            None => None,
        };
        let file = self.labels.as_deref().unwrap_or(&self.images);
        Dataset::new(inputs, targets).in_file(file)
    }

    fn describe(&self) -> String {
        let mut text = format!("IDX images {}", self.images.display());
        if let Some(labels) = &self.labels {
            text.push_str(&format!(", labels {}", labels.display()));
        }
        text.push_str(&format!(", scaled by 1/{}", self.scale));
        if let Some(names) = &self.classes {
            text.push_str(&format!(", {} named classes", names.len()));
        }
        text
    }
}

/// A label value as a class id, or why it cannot be one.
fn to_label(v: f64) -> std::result::Result<usize, String> {
    // Beyond 2^53 a float no longer tells neighbouring integers apart.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if !v.is_finite() || v.fract() != 0.0 {
        Err(format!(
            "{v} is not a whole number; labels must be whole non-negative numbers"
        ))
    } else if v < 0.0 {
        Err(format!("{v} is negative; labels must be whole non-negative numbers"))
    } else if v > EXACT || v > usize::MAX as f64 {
        Err(format!("{v} is too large for a class id"))
    } else {
        Ok(v as usize)
    }
}

/// The parsed header.
struct Header {
    ty: ElementType,
    dims: Vec<usize>,
    /// Bytes of header: 4 of magic plus 4 per dimension.
    len: u64,
    /// Bytes of data the dims call for.
    data_len: u64,
}

/// Reads the whole file; errors do not yet name it.
fn read_values<T: Value>(path: &Path) -> Result<(Vec<usize>, ElementType, Vec<T>)> {
    let mut file = File::open(path).map_err(|e| Error::new(format!("cannot open IDX file: {e}")))?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::new(format!("cannot read IDX file: {e}")))?
        .len();
    let mut prefix = [0u8; 2];
    let got = read_full(&mut file, &mut prefix).map_err(|e| Error::new(format!("cannot read IDX file: {e}")))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::new(format!("cannot read IDX file: {e}")))?;
    if got == 2 && prefix == GZIP_MAGIC {
        let mut reader = Source {
            inner: MultiGzDecoder::new(BufReader::new(file)),
            gzip: true,
        };
        let header = read_header(&mut reader)?;
        // What can fit in the compressed file at deflate's best ratio (and so be allocated for).
        let limit = file_len.saturating_mul(MAX_GZIP_RATIO);
        if header.data_len > limit {
            return Err(truncated(
                &header,
                format!("more than a gzip file of {file_len} bytes can hold"),
            ));
        }
        read_data(&mut reader, header, None)
    } else {
        let mut reader = Source {
            inner: BufReader::new(file),
            gzip: false,
        };
        let header = read_header(&mut reader)?;
        let available = file_len.saturating_sub(header.len);
        if available < header.data_len {
            return Err(truncated(&header, format!("found {available}")));
        }
        if available > header.data_len {
            return Err(trailing(&header, available - header.data_len, false));
        }
        read_data(&mut reader, header, Some(available))
    }
}

/// A plain or gzip reader, so that read errors can say which went wrong.
struct Source<R> {
    inner: R,
    gzip: bool,
}

impl<R: Read> Source<R> {
    /// Reads until `buf` is full or the data end; returns how many bytes were read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let gzip = self.gzip;
        read_full(&mut self.inner, buf).map_err(|e| {
            if gzip {
                Error::new(format!("corrupt gzip data: {e}"))
            } else {
                Error::new(format!("cannot read IDX file: {e}"))
            }
        })
    }
}

/// Like `read_exact`, but a short read at the end is reported as the count rather than an error.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn read_header<R: Read>(reader: &mut Source<R>) -> Result<Header> {
    let what = if reader.gzip { "decompressed data" } else { "file" };
    let mut magic = [0u8; 4];
    let got = reader.fill(&mut magic)?;
    if got < 4 {
        return Err(Error::new(format!(
            "not an IDX file: the {what} is only {got} bytes long, but an IDX file starts with a 4-byte magic \
             00 00 <type> <ndims>"
        )));
    }
    if magic[0] != 0 || magic[1] != 0 {
        let hex = magic.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
        return Err(Error::new(format!(
            "not an IDX file: the {what} starts with bytes {hex}, but an IDX file starts with 00 00 <type> <ndims>"
        )));
    }
    let ty = ElementType::from_byte(magic[2]).ok_or_else(|| {
        Error::new(format!(
            "unsupported IDX element type 0x{:02X}; supported are 0x08 (u8), 0x09 (i8), 0x0B (i16), 0x0C (i32), \
             0x0D (f32), 0x0E (f64)",
            magic[2]
        ))
    })?;
    let ndims = usize::from(magic[3]);
    if ndims == 0 {
        return Err(Error::new("the IDX header declares 0 dimensions; expected at least 1"));
    }
    let mut raw = vec![0u8; 4 * ndims];
    let got = reader.fill(&mut raw)?;
    if got < raw.len() {
        return Err(Error::new(format!(
            "truncated IDX header: {ndims} dimensions need {} bytes of sizes after the magic, found {got}",
            raw.len()
        )));
    }
    let dims: Vec<usize> = raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let data_len = dims
        .iter()
        .try_fold(ty.size() as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| {
            Error::new(format!(
                "the IDX header's dims {dims:?} describe more data than can be addressed"
            ))
        })?;
    Ok(Header {
        ty,
        dims,
        len: 4 + 4 * ndims as u64,
        data_len,
    })
}

fn truncated(header: &Header, found: String) -> Error {
    Error::new(format!(
        "truncated IDX file: the header's dims {:?} call for {} bytes of data, {found}",
        header.dims, header.data_len
    ))
}

fn trailing(header: &Header, extra: u64, at_least: bool) -> Error {
    Error::new(format!(
        "{}{extra} bytes of trailing data after the {} bytes of data that the header's dims {:?} call for",
        if at_least { "at least " } else { "" },
        header.data_len,
        header.dims
    ))
}

/// Decodes the data after the header. `known_len` is the number of data bytes when the file
/// length already proved it (plain files): the values are then allocated at once.
fn read_data<T: Value, R: Read>(
    reader: &mut Source<R>,
    header: Header,
    known_len: Option<u64>,
) -> Result<(Vec<usize>, ElementType, Vec<T>)> {
    let size = header.ty.size();
    let count = usize::try_from(header.data_len / size as u64).map_err(|_| {
        Error::new(format!(
            "the IDX header's dims {:?} are too large for memory",
            header.dims
        ))
    })?;
    let mut values: Vec<T> = match known_len {
        Some(len) if len == header.data_len => Vec::with_capacity(count),
        // Gzip: grow with what is actually decoded.
        _ => Vec::with_capacity(count.min(CHUNK)),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut remaining = header.data_len;
    while remaining > 0 {
        let want = remaining.min(CHUNK as u64) as usize;
        let got = reader.fill(&mut buf[..want])?;
        header.ty.decode_into(&buf[..got - got % size], &mut values);
        remaining -= got as u64;
        if got < want {
            let found = header.data_len - remaining;
            return Err(truncated(&header, format!("found {found}")));
        }
    }
    // Anything after the data (plain files were checked against their length already).
    let mut rest = reader.inner.by_ref().take(TRAILING_COUNT_LIMIT + 1);
    let extra = io::copy(&mut rest, &mut io::sink()).map_err(|e| {
        if reader.gzip {
            Error::new(format!("corrupt gzip data: {e}"))
        } else {
            Error::new(format!("cannot read IDX file: {e}"))
        }
    })?;
    if extra > 0 {
        let at_least = extra > TRAILING_COUNT_LIMIT;
        return Err(trailing(&header, extra.min(TRAILING_COUNT_LIMIT), at_least));
    }
    Ok((header.dims, header.ty, values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    trait WriteGz {
        fn write_gz(&self, name: &str, bytes: &[u8]) -> PathBuf;
    }

    impl WriteGz for TempDir {
        fn write_gz(&self, name: &str, bytes: &[u8]) -> PathBuf {
            self.write(name, gzip(bytes))
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// An IDX file: magic with `ty`, the dims, then `data` as given (already big-endian).
    fn idx(ty: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, ty, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(data);
        bytes
    }

    fn u8_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
        let data: Vec<u8> = (0..n * rows * cols).map(|v| (v * 17 % 256) as u8).collect();
        idx(0x08, &[n, rows, cols], &data)
    }

    fn error_of(result: Result<impl std::fmt::Debug>) -> Error {
        result.expect_err("expected an error")
    }

    #[test]
    fn reads_3d_u8_images() {
        let dir = TempDir::new("idx");
        let path = dir.write(
            "images-idx3-ubyte",
            idx(0x08, &[2, 2, 3], &[0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255]),
        );
        let (dims, values) = read_idx(&path).unwrap();
        assert_eq!(dims, vec![2, 2, 3]);
        assert_eq!(
            values,
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 250.0, 251.0, 252.0, 253.0, 254.0, 255.0]
        );
    }

    #[test]
    fn reads_1d_labels_and_empty_arrays() {
        let dir = TempDir::new("idx");
        let (dims, values) = read_idx(&dir.write("labels", idx(0x08, &[4], &[7, 0, 9, 3]))).unwrap();
        assert_eq!(dims, vec![4]);
        assert_eq!(values, vec![7.0, 0.0, 9.0, 3.0]);
        let (dims, values) = read_idx(&dir.write("empty", idx(0x08, &[0, 28, 28], &[]))).unwrap();
        assert_eq!(dims, vec![0, 28, 28]);
        assert!(values.is_empty());
    }

    #[test]
    fn reads_every_element_type_big_endian() {
        let dir = TempDir::new("idx");
        let f32s: Vec<u8> = [1.5f32, -2.25, 1e-3].iter().flat_map(|v| v.to_be_bytes()).collect();
        let (dims, values) = read_idx(&dir.write("f32", idx(0x0D, &[3], &f32s))).unwrap();
        assert_eq!(dims, vec![3]);
        assert_eq!(values, vec![1.5, -2.25, 1e-3]);

        let f64s: Vec<u8> = [0.5f64, -8.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(
            read_idx(&dir.write("f64", idx(0x0E, &[2, 1], &f64s))).unwrap(),
            (vec![2, 1], vec![0.5, -8.0])
        );
        let i8s = [0x80u8, 0xff, 0x7f];
        assert_eq!(
            read_idx(&dir.write("i8", idx(0x09, &[3], &i8s))).unwrap().1,
            vec![-128.0, -1.0, 127.0]
        );
        let i16s: Vec<u8> = [-300i16, 300].iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(
            read_idx(&dir.write("i16", idx(0x0B, &[2], &i16s))).unwrap().1,
            vec![-300.0, 300.0]
        );
        let i32s: Vec<u8> = [-70_000i32, 1 << 20].iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(
            read_idx(&dir.write("i32", idx(0x0C, &[2], &i32s))).unwrap().1,
            vec![-70_000.0, 1_048_576.0]
        );
    }

    #[test]
    fn gzip_is_recognised_by_magic_not_name() {
        let dir = TempDir::new("idx");
        let raw = u8_images(3, 4, 5);
        let plain = read_idx(&dir.write("plain-idx3-ubyte", &raw)).unwrap();
        let gz = read_idx(&dir.write_gz("images-idx3-ubyte.gz", &raw)).unwrap();
        let unnamed = read_idx(&dir.write_gz("images-no-extension", &raw)).unwrap();
        assert_eq!(plain.0, vec![3, 4, 5]);
        assert_eq!(plain, gz);
        assert_eq!(plain, unnamed);
        // Concatenated gzip members (as `cat a.gz b.gz` makes) are one stream.
        let mut two = gzip(&raw[..30]);
        two.extend(gzip(&raw[30..]));
        assert_eq!(read_idx(&dir.write("two-members.gz", &two)).unwrap(), plain);
        // A plain file named .gz is read as plain.
        assert_eq!(read_idx(&dir.write("not-really.gz", &raw)).unwrap(), plain);
    }

    #[test]
    fn source_builds_channels_first_scaled_images_with_numbered_classes() {
        let dir = TempDir::new("idx");
        let images = dir.write_gz(
            "train-images-idx3-ubyte.gz",
            &idx(0x08, &[3, 2, 2], &[0, 51, 102, 255, 0, 0, 0, 0, 255, 255, 255, 255]),
        );
        let labels = dir.write("train-labels-idx1-ubyte", idx(0x08, &[3], &[2, 0, 4]));
        let source = IdxSource::new(&images).with_labels(&labels);
        let d = source.load().unwrap();
        assert_eq!(d.inputs.shape, vec![3, 1, 2, 2]);
        assert_eq!(d.inputs.row(0), &[0.0, 0.2, 0.4, 1.0]);
        assert_eq!(d.labels(), Some(&[2, 0, 4][..]));
        assert_eq!(d.class_names().unwrap(), &["0", "1", "2", "3", "4"]);
        assert!(
            source.describe().contains("train-labels-idx1-ubyte"),
            "{}",
            source.describe()
        );

        let named = IdxSource {
            images: images.clone(),
            labels: Some(labels.clone()),
            scale: 1.0,
            classes: Some((0..6).map(|i| format!("c{i}")).collect()),
        };
        let d = named.load().unwrap();
        assert_eq!(d.inputs.row(0), &[0.0, 51.0, 102.0, 255.0]);
        assert_eq!(d.num_classes(), Some(6));

        let unlabelled = IdxSource::new(&images).with_scale(2.0).load().unwrap();
        assert!(unlabelled.targets.is_none());
        assert_eq!(unlabelled.inputs.row(0)[1], 25.5);

        // Float and 2-D [n, 1] labels holding whole numbers are fine too.
        let f32_labels: Vec<u8> = [1.0f32, 0.0, 1.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let labels = dir.write("f32-labels", idx(0x0D, &[3, 1], &f32_labels));
        assert_eq!(
            IdxSource::new(&images)
                .with_labels(labels)
                .load()
                .unwrap()
                .num_classes(),
            Some(2)
        );

        // A 4-D file is already channels-first.
        let rgb = dir.write("rgb", idx(0x08, &[1, 3, 1, 1], &[255, 0, 255]));
        assert_eq!(IdxSource::new(rgb).load().unwrap().inputs.shape, vec![1, 3, 1, 1]);
    }

    #[test]
    fn missing_file_is_named() {
        let dir = TempDir::new("idx");
        let path = dir.0.join("absent-idx3-ubyte");
        let err = error_of(read_idx(&path));
        assert_eq!(err.file.as_deref(), Some(path.as_path()));
        assert!(err.message.starts_with("cannot open IDX file: "), "{}", err.message);
        assert!(err.to_string().contains("absent-idx3-ubyte"));
        let err = error_of(
            IdxSource::new(dir.write("i", u8_images(1, 1, 1)))
                .with_labels(&path)
                .load(),
        );
        assert_eq!(err.file.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn bad_magic_says_what_was_found() {
        let dir = TempDir::new("idx");
        let path = dir.write("image.png", b"\x89PNG\r\n\x1a\n....");
        let err = error_of(read_idx(&path));
        assert_eq!(err.file.as_deref(), Some(path.as_path()));
        assert_eq!(
            err.message,
            "not an IDX file: the file starts with bytes 89 50 4e 47, but an IDX file starts with 00 00 <type> <ndims>"
        );
        let err = error_of(read_idx(&dir.write_gz("text.gz", b"hello world")));
        assert!(
            err.message
                .starts_with("not an IDX file: the decompressed data starts with bytes 68 65 6c 6c"),
            "{}",
            err.message
        );
        let err = error_of(read_idx(&dir.write("short", [0, 0])));
        assert!(
            err.message
                .starts_with("not an IDX file: the file is only 2 bytes long"),
            "{}",
            err.message
        );
        let err = error_of(read_idx(&dir.write("empty", [])));
        assert!(err.message.contains("only 0 bytes long"), "{}", err.message);
    }

    #[test]
    fn unsupported_type_is_named() {
        let dir = TempDir::new("idx");
        let err = error_of(read_idx(&dir.write("u16", idx(0x0A, &[1], &[0, 1]))));
        assert!(
            err.message
                .starts_with("unsupported IDX element type 0x0A; supported are 0x08 (u8)"),
            "{}",
            err.message
        );
        assert!(err.file.is_some());
        let err = error_of(read_idx(&dir.write("scalar", idx(0x08, &[], &[1]))));
        assert_eq!(err.message, "the IDX header declares 0 dimensions; expected at least 1");
    }

    #[test]
    fn truncated_files_say_expected_and_found() {
        let dir = TempDir::new("idx");
        let mut raw = u8_images(2, 3, 3);
        raw.truncate(raw.len() - 5);
        let err = error_of(read_idx(&dir.write("short-idx3-ubyte", &raw)));
        assert_eq!(
            err.message,
            "truncated IDX file: the header's dims [2, 3, 3] call for 18 bytes of data, found 13"
        );
        let err = error_of(read_idx(&dir.write_gz("short.gz", &raw)));
        assert_eq!(
            err.message,
            "truncated IDX file: the header's dims [2, 3, 3] call for 18 bytes of data, found 13"
        );
        // i32 data: bytes, not values, are counted.
        let err = error_of(read_idx(&dir.write("i32", idx(0x0C, &[2], &[0, 0, 0, 1, 0, 0]))));
        assert_eq!(
            err.message,
            "truncated IDX file: the header's dims [2] call for 8 bytes of data, found 6"
        );
        // A header cut inside its dims.
        let err = error_of(read_idx(&dir.write("cut-header", [0, 0, 8, 3, 0, 0, 0, 2, 0])));
        assert_eq!(
            err.message,
            "truncated IDX header: 3 dimensions need 12 bytes of sizes after the magic, found 5"
        );
    }

    #[test]
    fn huge_headers_are_refused_before_allocating() {
        let dir = TempDir::new("idx");
        // (2^32-1)^2 bytes still fit in a u64, but the file has 3 data bytes.
        let err = error_of(read_idx(
            &dir.write("huge", idx(0x08, &[u32::MAX, u32::MAX, 1], &[1, 2, 3])),
        ));
        assert!(
            err.message
                .starts_with("truncated IDX file: the header's dims [4294967295, 4294967295, 1]"),
            "{}",
            err.message
        );
        assert!(err.message.ends_with("found 3"), "{}", err.message);
        let err = error_of(read_idx(&dir.write("overflow", idx(0x0E, &[u32::MAX; 4], &[]))));
        assert!(
            err.message.contains("more data than can be addressed"),
            "{}",
            err.message
        );
        // A small gzip file cannot hold 4 GB of data.
        let err = error_of(read_idx(&dir.write_gz("huge.gz", &idx(0x08, &[u32::MAX], &[1, 2, 3]))));
        assert!(
            err.message
                .contains("call for 4294967295 bytes of data, more than a gzip file of"),
            "{}",
            err.message
        );
        // Within deflate's ratio, a gzip file that falls short is read and found truncated.
        let err = error_of(read_idx(
            &dir.write_gz("short-by-a-lot.gz", &idx(0x08, &[1000], &[0; 10])),
        ));
        assert!(
            err.message.ends_with("call for 1000 bytes of data, found 10"),
            "{}",
            err.message
        );
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let dir = TempDir::new("idx");
        let mut raw = u8_images(1, 2, 2);
        raw.extend_from_slice(b"junk!");
        let expected = "5 bytes of trailing data after the 4 bytes of data that the header's dims [1, 2, 2] call for";
        assert_eq!(error_of(read_idx(&dir.write("trailing", &raw))).message, expected);
        assert_eq!(error_of(read_idx(&dir.write_gz("trailing.gz", &raw))).message, expected);
    }

    #[test]
    fn corrupt_gzip_is_reported() {
        let dir = TempDir::new("idx");
        let mut gz = gzip(&u8_images(4, 8, 8));
        let mid = gz.len() / 2;
        for b in &mut gz[mid..mid + 8] {
            *b ^= 0x5a;
        }
        let path = dir.write("corrupt.gz", &gz);
        let err = error_of(read_idx(&path));
        assert!(err.message.starts_with("corrupt gzip data: "), "{}", err.message);
        assert_eq!(err.file.as_deref(), Some(path.as_path()));
        // Cut short: the stream ends without its trailer.
        let gz = gzip(&u8_images(4, 8, 8));
        let err = error_of(read_idx(&dir.write("cut.gz", &gz[..gz.len() - 6])));
        assert!(err.message.starts_with("corrupt gzip data: "), "{}", err.message);
        // A valid member followed by bytes that are not gzip.
        let mut gz = gzip(&u8_images(1, 2, 2));
        gz.extend_from_slice(b"not gzip at all");
        let err = error_of(read_idx(&dir.write("garbage-after.gz", &gz)));
        assert!(err.message.starts_with("corrupt gzip data: "), "{}", err.message);
    }

    #[test]
    fn label_count_must_match_images() {
        let dir = TempDir::new("idx");
        let images = dir.write("images", u8_images(3, 2, 2));
        let labels = dir.write("labels", idx(0x08, &[2], &[0, 1]));
        let err = error_of(IdxSource::new(&images).with_labels(&labels).load());
        assert_eq!(err.file.as_deref(), Some(labels.as_path()));
        assert_eq!(
            err.message,
            format!(
                "the label file has 2 labels but the image file {} has 3 images",
                images.display()
            )
        );
        let labels = dir.write("labels-2d", idx(0x08, &[3, 2], &[0; 6]));
        let err = error_of(IdxSource::new(&images).with_labels(&labels).load());
        assert_eq!(err.message, "expected labels shaped [n], found dims [3, 2]");
        let err = error_of(IdxSource::new(&labels).load());
        assert!(
            err.message.starts_with("expected images shaped [n, rows, cols]"),
            "{}",
            err.message
        );
        assert_eq!(err.file.as_deref(), Some(labels.as_path()));
    }

    #[test]
    fn labels_must_be_whole_non_negative_numbers() {
        let dir = TempDir::new("idx");
        let images = dir.write("images", u8_images(3, 1, 1));
        let load = |labels: &Path| IdxSource::new(&images).with_labels(labels).load();

        let negative = dir.write("negative", idx(0x09, &[3], &[0, 1, 0xff]));
        let err = error_of(load(&negative));
        assert_eq!(err.file.as_deref(), Some(negative.as_path()));
        assert_eq!(err.location.as_deref(), Some("label 2"));
        assert_eq!(err.message, "-1 is negative; labels must be whole non-negative numbers");

        let fraction: Vec<u8> = [0.0f32, 1.5, 2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let err = error_of(load(&dir.write("fraction", idx(0x0D, &[3], &fraction))));
        assert_eq!(err.location.as_deref(), Some("label 1"));
        assert_eq!(
            err.message,
            "1.5 is not a whole number; labels must be whole non-negative numbers"
        );

        let nan: Vec<u8> = [0.0f64, f64::NAN, 2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let err = error_of(load(&dir.write("nan", idx(0x0E, &[3], &nan))));
        assert!(err.message.starts_with("NaN is not a whole number"), "{}", err.message);

        let huge: Vec<u8> = [0i32, 1, i32::MAX].iter().flat_map(|v| v.to_be_bytes()).collect();
        let err = error_of(load(&dir.write("huge", idx(0x0C, &[3], &huge))));
        assert!(
            err.message.contains("would imply 2147483648 classes"),
            "{}",
            err.message
        );

        let big = dir.write("big", idx(0x08, &[3], &[0, 1, 7]));
        let err = error_of(
            IdxSource::new(&images)
                .with_labels(&big)
                .with_classes(vec!["a".into(), "b".into()])
                .load(),
        );
        assert_eq!(err.file.as_deref(), Some(big.as_path()));
        assert_eq!(err.message, "label 7 at row 2 is outside the 2 classes");
    }

    #[test]
    fn bad_scale_is_refused() {
        let dir = TempDir::new("idx");
        let images = dir.write("images", u8_images(1, 1, 1));
        let err = error_of(IdxSource::new(&images).with_scale(0.0).load());
        assert_eq!(err.message, "the image scale must be a positive finite number, found 0");
        assert_eq!(err.file.as_deref(), Some(images.as_path()));
    }

    /// The real MNIST files from `scripts/fetch-data.sh mnist`, when they are there.
    #[test]
    fn reads_real_mnist_when_present() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
        if !root.join("t10k-labels-idx1-ubyte.gz").exists() {
            return;
        }
        let counts = |d: &Dataset| {
            let mut counts = [0usize; 10];
            d.labels().unwrap().iter().for_each(|&l| counts[l] += 1);
            counts
        };
        let test = IdxSource::new(root.join("t10k-images-idx3-ubyte.gz"))
            .with_labels(root.join("t10k-labels-idx1-ubyte.gz"))
            .load()
            .unwrap();
        assert_eq!(test.inputs.shape, vec![10_000, 1, 28, 28]);
        assert_eq!(test.num_classes(), Some(10));
        assert_eq!(counts(&test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
        assert!(test.inputs.data.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(test.inputs.data.iter().cloned().fold(0.0, f32::max), 1.0);

        let train = IdxSource::new(root.join("train-images-idx3-ubyte.gz"))
            .with_labels(root.join("train-labels-idx1-ubyte.gz"))
            .load()
            .unwrap();
        assert_eq!(train.inputs.shape, vec![60_000, 1, 28, 28]);
        assert_eq!(
            counts(&train),
            [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
        );
        assert_eq!(train.labels().unwrap()[..5], [5, 0, 4, 1, 9]);
    }
}
