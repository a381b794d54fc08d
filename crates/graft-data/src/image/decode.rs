//! One image file → one model input: decoded by the `image` crate (JPEG, PNG, BMP, GIF's first frame, WebP),
//! brought to the model's channels, cropped or padded to its aspect ratio as the source says, resized with an
//! antialiasing filter (triangle, support widened when shrinking, as PIL's bilinear), and laid out channels-first as
//! `f32` in 0–1 before normalization.

use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, ImageReader, Limits};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Images larger than this on a side are refused: a damaged header must not make graft allocate gigabytes.
const MAX_SIDE: u32 = 16_384;
/// The most a decoder may allocate for one image.
const MAX_ALLOC: u64 = 256 << 20;

/// How an image whose aspect ratio differs from the model's input reaches its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Resize to the size, whatever the aspect ratio (Keras' default).
    #[default]
    Stretch,
    /// Cut the largest centred region of the size's aspect ratio, then resize (torchvision's resize + centre crop).
    Crop,
    /// Resize to fit inside the size and pad the rest with black, centred (letterboxing).
    Pad,
}

/// A decoded image and what the source checks about it.
pub struct Decoded {
    pub image: DynamicImage,
    /// Whether any pixel has colour (channels that differ); a grey picture saved as RGB has none.
    pub has_colour: bool,
}

/// Decodes the file at `path` (its format found from its bytes, not its name).
pub fn decode_file(path: &Path) -> Result<Decoded> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes).map_err(|e| e.in_file(path))
}

/// Decodes an image held in memory.
pub fn decode_bytes(bytes: &[u8]) -> Result<Decoded> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::new(format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::new(
            "not an image in a format graft reads (JPEG, PNG, BMP, GIF, WebP)",
        ));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| Error::new(describe(&e)))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(Error::new("the image is empty (0 pixels)"));
    }
    let has_colour = image.color().has_color() && {
        let rgb = image.to_rgb8();
        rgb.pixels().any(|p| p[0] != p[1] || p[1] != p[2])
    };
    Ok(Decoded { image, has_colour })
}

/// The decoder's complaint in words a user can act on.
fn describe(e: &image::ImageError) -> String {
    match e {
        image::ImageError::Decoding(d) => format!("damaged or truncated image ({d})"),
        image::ImageError::IoError(io) => format!("damaged or truncated image ({io})"),
        image::ImageError::Limits(l) => format!("too large to decode ({l})"),
        image::ImageError::Unsupported(u) => format!("unsupported image ({u})"),
        other => other.to_string(),
    }
}

/// A region of an image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// `image` with `channels` (1 or 3) resized to `size` (`[height, width]`) by `fit`, or from `region` (a random
/// resized crop) when given; channels-first values in 0–1.
pub fn to_input(image: &DynamicImage, channels: usize, size: [usize; 2], fit: Fit, region: Option<Region>) -> Vec<f32> {
    let [h, w] = size;
    let (tw, th) = (w as u32, h as u32);
    let (iw, ih) = image.dimensions();
    let source = match (region, fit) {
        (Some(r), _) => image.crop_imm(r.x, r.y, r.width, r.height),
        (None, Fit::Crop) => {
            // The largest centred region with the target's aspect ratio.
            let (cw, ch) = if iw as u64 * th as u64 > ih as u64 * tw as u64 {
                (((ih as u64 * tw as u64) / th as u64).max(1) as u32, ih)
            } else {
                (iw, ((iw as u64 * th as u64) / tw as u64).max(1) as u32)
            };
            image.crop_imm((iw - cw) / 2, (ih - ch) / 2, cw, ch)
        }
        (None, _) => image.clone(),
    };
    let (sw, sh) = source.dimensions();
    // Resized to the whole size, or (padding) to the largest size of the source's aspect ratio that fits.
    let (rw, rh) = if fit == Fit::Pad && region.is_none() {
        if sw as u64 * th as u64 > sh as u64 * tw as u64 {
            (tw, ((sh as u64 * tw as u64) / sw as u64).clamp(1, th as u64) as u32)
        } else {
            (((sw as u64 * th as u64) / sh as u64).clamp(1, tw as u64) as u32, th)
        }
    } else {
        (tw, th)
    };
    let (ox, oy) = ((tw - rw) / 2, (th - rh) / 2);
    let mut out = vec![0f32; channels * h * w];
    let mut put = |c: usize, x: u32, y: u32, v: u8| {
        out[c * h * w + (y + oy) as usize * w + (x + ox) as usize] = v as f32 / 255.0;
    };
    let resize = |src: &DynamicImage| {
        if (sw, sh) == (rw, rh) {
            src.clone()
        } else {
            src.resize_exact(rw, rh, FilterType::Triangle)
        }
    };
    if channels == 1 {
        let grey = resize(&DynamicImage::ImageLuma8(source.to_luma8()));
        for (x, y, p) in grey.to_luma8().enumerate_pixels() {
            put(0, x, y, p[0]);
        }
    } else {
        let rgb = resize(&DynamicImage::ImageRgb8(source.to_rgb8()));
        for (x, y, p) in rgb.to_rgb8().enumerate_pixels() {
            for c in 0..3 {
                put(c, x, y, p[c]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb, RgbImage};

    fn encoded(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(vec![]);
        DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut bytes, format)
            .unwrap();
        bytes.into_inner()
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w.max(2)) as u8, (y * 255 / h.max(2)) as u8, 128])
        })
    }

    #[test]
    fn every_format_decodes_to_the_same_pixels_where_lossless() {
        let img = gradient(12, 8);
        for format in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::WebP] {
            let d = decode_bytes(&encoded(&img, format)).unwrap();
            assert_eq!(d.image.to_rgb8(), img, "{format:?}");
            assert!(d.has_colour);
        }
        // JPEG is lossy: close, not equal.
        let d = decode_bytes(&encoded(&img, ImageFormat::Jpeg)).unwrap();
        let diff = d
            .image
            .to_rgb8()
            .pixels()
            .zip(img.pixels())
            .map(|(a, b)| (0..3).map(|c| (a[c] as i32 - b[c] as i32).abs()).max().unwrap())
            .max()
            .unwrap();
        assert!(diff < 24, "JPEG off by {diff}");
        let gif = decode_bytes(&encoded(&img, ImageFormat::Gif)).unwrap();
        assert_eq!(gif.image.dimensions(), (12, 8));
    }

    #[test]
    fn bad_bytes_are_named_for_what_they_are() {
        let err = decode_bytes(b"hello, this is text").err().unwrap();
        assert!(err.message.starts_with("not an image"), "{}", err.message);
        let png = encoded(&gradient(40, 40), ImageFormat::Png);
        let err = decode_bytes(&png[..png.len() / 2]).err().unwrap();
        assert!(err.message.contains("damaged or truncated"), "{}", err.message);
    }

    #[test]
    fn grey_pictures_saved_as_rgb_have_no_colour() {
        let grey = RgbImage::from_fn(5, 5, |x, y| {
            let v = (x * 40 + y) as u8;
            Rgb([v, v, v])
        });
        assert!(!decode_bytes(&encoded(&grey, ImageFormat::Png)).unwrap().has_colour);
    }

    #[test]
    fn channels_first_in_unit_range_and_fit_policies() {
        // 4×2 (w×h): left half white, right half black.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(4, 2, |x, _| {
            if x < 2 { Rgb([255, 255, 255]) } else { Rgb([0, 0, 0]) }
        }));
        let same = to_input(&img, 3, [2, 4], Fit::Stretch, None);
        assert_eq!(same.len(), 3 * 2 * 4);
        assert_eq!(&same[..4], &[1.0, 1.0, 0.0, 0.0]);
        assert_eq!(&same[8..12], &[1.0, 1.0, 0.0, 0.0]);
        // Crop to a square keeps the centre columns 1 and 2: one white, one black.
        let crop = to_input(&img, 1, [2, 2], Fit::Crop, None);
        assert_eq!(crop, vec![1.0, 0.0, 1.0, 0.0]);
        // Pad into 4×4: the 4×2 image in rows 1 and 2, black above and below.
        let pad = to_input(&img, 1, [4, 4], Fit::Pad, None);
        assert_eq!(&pad[..4], &[0.0; 4]);
        assert_eq!(&pad[4..8], &[1.0, 1.0, 0.0, 0.0]);
        assert_eq!(&pad[12..], &[0.0; 4]);
        // A region is cut out first.
        let region = Region {
            x: 2,
            y: 0,
            width: 2,
            height: 2,
        };
        assert_eq!(to_input(&img, 1, [1, 1], Fit::Stretch, Some(region)), vec![0.0]);
    }

    #[test]
    fn shrinking_averages_instead_of_skipping_pixels() {
        // A 1-pixel checkerboard shrunk 8× is mid-grey everywhere; point sampling would give black or white.
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(64, 64, |x, y| {
            image::Luma([if (x + y) % 2 == 0 { 255 } else { 0 }])
        }));
        let small = to_input(&img, 1, [8, 8], Fit::Stretch, None);
        assert!(small.iter().all(|v| (v - 0.5).abs() < 0.05), "{small:?}");
    }
}
