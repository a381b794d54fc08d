//! Grids of images in the report — an autoencoder's inputs beside their reconstructions, a generator's samples —
//! drawn pixel by pixel on the same bitmap backend as the charts, each image scaled up so an 8×8 digit is visible.

use std::path::Path;

use plotters::prelude::*;

use super::Chart;
use super::charts::{plot_error, render_png};
use crate::error::{Error, Result};

/// Images to draw as a grid, row by row: every image `channels × height × width` values (channel-first, as the
/// model sees them), grey for one channel and RGB for three.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageGrid {
    /// The PNG's file name in the report directory.
    pub file: String,
    pub caption: String,
    /// `[channels, height, width]` of every image.
    pub shape: [usize; 3],
    pub images: Vec<Vec<f32>>,
    pub columns: usize,
}

impl ImageGrid {
    /// The per-sample shape of image-like data as `[channels, height, width]`: `[C, H, W]` as it is, a flat `[F]`
    /// as a square grey image when F is a square number; `None` for data that is not an image.
    pub fn image_shape(sample: &[usize]) -> Option<[usize; 3]> {
        match *sample {
            [c, h, w] if c == 1 || c == 3 => Some([c, h, w]),
            [f] => {
                let side = (f as f64).sqrt().round() as usize;
                (side * side == f && side >= 4).then_some([1, side, side])
            }
            _ => None,
        }
    }
}

/// Draws `grid` into `dir` as its `file`, for the report.
pub(super) fn write_image_grid(dir: &Path, grid: &ImageGrid) -> Result<Chart> {
    grid.write_png(&dir.join(&grid.file))?;
    Ok(Chart {
        file: grid.file.clone(),
        caption: grid.caption.clone(),
    })
}

impl ImageGrid {
    /// Draws the grid as the PNG `path` (written atomically); pixel values are clamped to [0, 1], the range
    /// image data is scaled to.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        let grid = self;
        let [channels, height, width] = grid.shape;
        let size = channels * height * width;
        let path = path.to_path_buf();
        if let Some(bad) = grid.images.iter().find(|i| i.len() != size) {
            return Err(Error::new(format!(
                "an image of {} values for the shape {:?}",
                bad.len(),
                grid.shape
            ))
            .in_file(&path));
        }
        let columns = grid.columns.max(1);
        let rows = grid.images.len().div_ceil(columns).max(1);
        // Each image pixel becomes a square of `scale` screen pixels, with a 2-pixel gap between images.
        let scale = (96 / height.max(width).max(1)).max(1);
        let (cell_w, cell_h) = (width * scale + 2, height * scale + 2);
        let dims = ((columns * cell_w + 2) as u32, (rows * cell_h + 2) as u32);
        render_png(&path, dims, |root| {
            for (k, image) in grid.images.iter().enumerate() {
                let (x0, y0) = (2 + (k % columns) * cell_w, 2 + (k / columns) * cell_h);
                for y in 0..height {
                    for x in 0..width {
                        let value = |c: usize| {
                            let v = image[c * height * width + y * width + x];
                            (v.clamp(0.0, 1.0) * 255.0).round() as u8
                        };
                        let color = if channels == 3 {
                            RGBColor(value(0), value(1), value(2))
                        } else {
                            let g = value(0);
                            RGBColor(g, g, g)
                        };
                        let (px, py) = ((x0 + x * scale) as i32, (y0 + y * scale) as i32);
                        root.draw(&Rectangle::new(
                            [(px, py), (px + scale as i32, py + scale as i32)],
                            color.filled(),
                        ))
                        .map_err(plot_error(&path))?;
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graft_data::test_util::TempDir;

    #[test]
    fn a_grid_is_a_png_of_the_expected_size_and_shapes_are_recognized() {
        let dir = TempDir::new("grid");
        let images: Vec<Vec<f32>> = (0..6)
            .map(|k| (0..64).map(|p| ((p + k) % 7) as f32 / 6.0).collect())
            .collect();
        let grid = ImageGrid {
            file: "grid.png".into(),
            caption: "digits".into(),
            shape: [1, 8, 8],
            images,
            columns: 3,
        };
        write_image_grid(&dir.0, &grid).unwrap();
        let bytes = std::fs::read(dir.0.join("grid.png")).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        // Width and height from the IHDR chunk: 3 columns and 2 rows of 8·12 + 2 pixels, plus the 2-pixel border.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (3 * 98 + 2, 2 * 98 + 2));
        assert_eq!(ImageGrid::image_shape(&[64]), Some([1, 8, 8]));
        assert_eq!(ImageGrid::image_shape(&[1, 28, 28]), Some([1, 28, 28]));
        assert_eq!(ImageGrid::image_shape(&[10]), None);
        assert_eq!(ImageGrid::image_shape(&[20, 8]), None);
        let bad = ImageGrid {
            images: vec![vec![0.0; 10]],
            ..grid
        };
        assert!(
            write_image_grid(&dir.0, &bad)
                .unwrap_err()
                .to_string()
                .contains("10 values")
        );
    }
}
