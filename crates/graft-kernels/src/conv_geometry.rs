//! The geometry of a 2-D convolution: what both of its forwards (`conv.rs`'s im2col + gemm, `conv_direct.rs`'s
//! direct kernel) and its backward read.

/// The geometry of one convolution. Padding is the `(begin, end)` pair per axis; only `begin` shifts the windows
/// (the end padding is already reflected in the output size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub input: [usize; 2],
    pub output: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad_begin: [usize; 2],
    pub dilation: [usize; 2],
}
