//! The fused operations as one burn backend extension: the `FusedBackend` trait, implemented for the flex backend
//! in `flex.rs` and for autodiff over it in `autodiff.rs`; `#[backend_extension]` adds the `Dispatch` implementation
//! that the tensor-level functions of `lib.rs` call.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};
use burn::tensor::ops::ConvOptions;

use crate::adam;

/// The fused passes as backend operations. Each forward returns the states and the saved gates; each backward the
/// gradients of the forward's differentiable inputs (LSTM: `x, w_ih, bias, w_hh, h0, c0`; GRU: `xp, w_hh, b_hn, h0`).
#[backend_extension(Flex, Autodiff)]
pub trait FusedBackend: Backend {
    #[allow(clippy::too_many_arguments)]
    fn lstm_forward(
        x: FloatTensor<Self>,
        w_ih: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`Self::lstm_forward`] for a caller that uses only the final states: those, `[B, 2H]` (h then c after the
    /// direction's last step), then the states and saved gates. Its backward is `lstm_backward` with that `[B, 2H]`
    /// gradient as `d_states`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn lstm_final_forward(
        x: FloatTensor<Self>,
        w_ih: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `d_states`: of every step's states, `[B, T, 2H]`, or of the final states alone, `[B, 2H]`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn lstm_backward(
        d_states: FloatTensor<Self>,
        states: FloatTensor<Self>,
        saved: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w_ih: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );

    fn dense_forward(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;

    /// [`Self::dense_forward`] for a weight that stays the same from call to call (a model serving or predicting),
    /// through the ReLU when `relu`: on flex the weight's packed panels are kept for the next call
    /// (`dense_panels.rs`). Under autodiff, the tracked forward.
    fn dense_inference_forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// The gradients of `x` (an empty tensor unless `need_dx`: a model's first dense layer reads the data, whose
    /// gradient nobody asks for), `w` and `b`.
    fn dense_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        need_dx: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    fn gru_forward(
        xp: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        b_hn: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// A 2-D convolution forward (groups = 1): im2col + gemm per image.
    fn conv2d_forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// [`FusedBackend::conv2d_forward`] then max pooling over non-overlapping `pool` windows, in one pass where the
    /// values alone are needed (under autodiff, the two tracked operations).
    fn conv2d_max_pool_forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
        pool: [usize; 2],
    ) -> FloatTensor<Self>;

    /// The gradients of `x` (an empty tensor unless `need_dx`), `w` and `b`; `y` is the forward's output when it
    /// went through the ReLU (`relu`), ignored otherwise.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        y: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
        need_dx: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `[B, C, H, W]` → (maxima `[B, C, H / kh, W / kw]`, position of each maximum in its window).
    fn max_pool2d_forward(x: FloatTensor<Self>, kh: usize, kw: usize) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The maxima alone, for inference: no positions are kept (under autodiff, [`FusedBackend::max_pool2d_forward`]'s
    /// maxima, tracked as usual).
    fn max_pool2d_values(x: FloatTensor<Self>, kh: usize, kw: usize) -> FloatTensor<Self>;

    fn max_pool2d_backward(
        dy: FloatTensor<Self>,
        at: FloatTensor<Self>,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
    ) -> FloatTensor<Self>;

    /// The rows of `weight` `[V, D]` at `ids` (whole numbers in floats, any shape) → `[...ids, D]`.
    fn fused_embedding(weight: FloatTensor<Self>, ids: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The table's gradient `[vocab, D]` from the output gradient at `ids`.
    fn fused_embedding_backward(dy: FloatTensor<Self>, ids: FloatTensor<Self>, vocab: usize) -> FloatTensor<Self>;

    /// GELU (erf form), element-wise.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The input gradient of [`FusedBackend::fused_gelu`].
    fn fused_gelu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;

    /// One Adam/AdamW update: the new parameter and moments (see [`adam::AdamStep`]).
    fn fused_adam(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: adam::AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Softmax over the last axis.
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The input gradient of [`FusedBackend::fused_softmax`] from its output `y`.
    fn fused_softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;

    #[allow(clippy::too_many_arguments)]
    fn gru_backward(
        d_states: FloatTensor<Self>,
        states: FloatTensor<Self>,
        saved: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );
}
