//! The scikit-learn 8×8 handwritten digits set, built into the library so that examples, tests
//! and first experiments run with no download.
//!
//! 1,797 grey images of 8×8 pixels (values 0–16) in 10 classes. The file is copied verbatim from
//! the scikit-learn 1.9.1 wheel (`sklearn/datasets/data/digits.csv.gz`, BSD-3-Clause; originally the
//! UCI "Optical Recognition of Handwritten Digits" test set). `scripts/fetch-digits.sh` re-creates
//! it and checks its sha256.

use std::io::Read;

use flate2::read::GzDecoder;

use super::array::Array;
use super::dataset::{DataSource, Dataset, Targets};
use super::table::parse_records;
use crate::error::{Context, Error, Result};

/// The compressed CSV: one image per line, 64 pixel values then the label.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");
/// How errors refer to the embedded file.
const FILE_NAME: &str = "digits.csv.gz (built-in)";

/// Number of images in the set.
pub const DIGITS_SAMPLES: usize = 1797;
const SIDE: usize = 8;
const PIXELS: usize = SIDE * SIDE;
const CLASSES: usize = 10;
/// Pixel values run 0..=16; dividing by this maps them onto 0..=1.
const MAX_PIXEL: f32 = 16.0;

/// The built-in digits set as a [`DataSource`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digits;

impl DataSource for Digits {
    fn load(&self) -> Result<Dataset> {
        load_digits()
    }

    fn describe(&self) -> String {
        "built-in digits: 1,797 grey 8x8 images, 10 classes (scikit-learn, BSD-3-Clause)".to_string()
    }
}

/// Loads the digits: inputs `[1797, 1, 8, 8]` (channels-first) scaled to 0..=1, class targets
/// named `"0"` … `"9"`.
pub fn load_digits() -> Result<Dataset> {
    let mut text = String::new();
    GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::new(format!("cannot decompress: {e}")).in_file(FILE_NAME))?;
    parse_digits_csv(&text).in_file(FILE_NAME)
}

/// Parses the digits CSV. Kept separate from the embedding so bad input can be tested.
fn parse_digits_csv(text: &str) -> Result<Dataset> {
    let mut pixels = Vec::with_capacity(DIGITS_SAMPLES * PIXELS);
    let mut labels = Vec::with_capacity(DIGITS_SAMPLES);
    for record in parse_records(text, b',', 1)? {
        let at_line = || format!("line {}", record.line);
        let fields = &record.fields;
        if fields.len() != PIXELS + 1 {
            return Err(Error::new(format!("expected {} fields, found {}", PIXELS + 1, fields.len())).at(at_line()));
        }
        for (column, field) in fields[..PIXELS].iter().enumerate() {
            let value = parse_number(field)
                .filter(|v| (0.0..=MAX_PIXEL).contains(v))
                .ok_or_else(|| {
                    Error::new(format!("pixel {column} is '{field}', expected a number from 0 to 16")).at(at_line())
                })?;
            pixels.push(value / MAX_PIXEL);
        }
        let field = &fields[PIXELS];
        let label = parse_number(field)
            .filter(|v| v.fract() == 0.0 && (0.0..CLASSES as f32).contains(v))
            .ok_or_else(|| Error::new(format!("label is '{field}', expected a digit 0 to 9")).at(at_line()))?;
        labels.push(label as usize);
    }
    let n = labels.len();
    let inputs = Array::new(vec![n, 1, SIDE, SIDE], pixels)?;
    Dataset::new(inputs, Some(Targets::numbered_classes(labels, CLASSES)))
}

/// A finite number; the file holds integers but some scikit-learn versions wrote `0.0`.
fn parse_number(field: &str) -> Option<f32> {
    field.trim().parse::<f32>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_all_images_with_known_class_counts() {
        let d = load_digits().unwrap();
        assert_eq!(d.len(), DIGITS_SAMPLES);
        assert_eq!(d.inputs.shape, vec![1797, 1, 8, 8]);
        assert_eq!(d.num_classes(), Some(10));
        assert_eq!(d.class_names().unwrap()[3], "3");
        let mut counts = [0usize; 10];
        for &label in d.labels().unwrap() {
            counts[label] += 1;
        }
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
        assert!(d.inputs.data.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(d.inputs.data.iter().cloned().fold(0.0, f32::max), 1.0);
    }

    #[test]
    fn first_image_matches_the_source() {
        let d = load_digits().unwrap();
        // The first row of the CSV, a zero.
        let first: [u8; 64] = [
            0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0, 0,
            5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0,
        ];
        let expected: Vec<f32> = first.iter().map(|&v| v as f32 / 16.0).collect();
        assert_eq!(d.inputs.row(0), &expected[..]);
        assert_eq!(d.labels().unwrap()[..3], [0, 1, 2]);
        // Row 0, column 3 of the image is pixel 3.
        assert_eq!(d.inputs.row(0)[3], 13.0 / 16.0);
    }

    #[test]
    fn bad_rows_are_reported_by_line() {
        let good = vec!["0"; 64].join(",");
        let err = parse_digits_csv(&format!("{good},3\n{good},x\n")).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("line 2"));
        assert!(err.message.contains("label is 'x'"), "{}", err.message);
        let err = parse_digits_csv("1,2,3\n").unwrap_err();
        assert_eq!(err.message, "expected 65 fields, found 3");
        let err = parse_digits_csv(&format!("17,{},1\n", vec!["0"; 63].join(","))).unwrap_err();
        assert!(err.message.starts_with("pixel 0 is '17'"), "{}", err.message);
        let ok = parse_digits_csv(&format!("{good},9.0\n\n")).unwrap();
        assert_eq!(ok.labels(), Some(&[9][..]));
    }
}
