//! [`FusedBackend`] on autodiff over any backend that has it: each forward runs the inner backend's and records a
//! `Backward` step (one struct per operation) that calls the inner backend's backward with what the forward saved.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend};
use burn::tensor::ops::ConvOptions;

use crate::adam;
use crate::backend::FusedBackend;

/// Hands each parent that takes part in autodiff its gradient.
fn register<B: Backend, const N: usize>(
    grads: &mut Gradients,
    parents: [Option<burn::backend::autodiff::NodeId>; N],
    values: [FloatTensor<B>; N],
) {
    for (parent, grad) in parents.into_iter().zip(values) {
        if let Some(id) = parent {
            grads.register::<B>(id, grad);
        }
    }
}

/// Runs an LSTM forward (`run`: on the inner backend's values of x, w_ih, bias, w_hh, h0, c0 and keep, returning its
/// output, the states and the saved gates) and tracks its output with [`LstmBackward`], which keeps the states and
/// saved gates for the backward. The output is the states themselves or the final states alone; the backward takes
/// either gradient. Returns the tracked output, the states and the saved gates.
#[allow(clippy::type_complexity)]
fn tracked_lstm<B: Backend + FusedBackend, C: CheckpointStrategy>(
    inputs: [FloatTensor<Autodiff<B, C>>; 7],
    reverse: bool,
    run: impl FnOnce([FloatTensor<B>; 7]) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>),
) -> (FloatTensor<Autodiff<B, C>>, FloatTensor<B>, FloatTensor<B>) {
    let (output, states, saved) = run(inputs.each_ref().map(|t| t.primitive().clone()));
    let [x, w_ih, bias, w_hh, h0, c0, keep] = inputs;
    let tracked = match LstmBackward
        .prepare::<C>([x.node(), w_ih.node(), bias.node(), w_hh.node(), h0.node(), c0.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            (
                states.clone(),
                saved.clone(),
                x.into_primitive(),
                w_ih.into_primitive(),
                w_hh.into_primitive(),
                h0.into_primitive(),
                c0.into_primitive(),
                keep.into_primitive(),
                reverse,
            ),
            output,
        ),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    (tracked, states, saved)
}

#[derive(Debug)]
struct LstmBackward;

impl<B: Backend + FusedBackend> Backward<B, 6> for LstmBackward {
    /// states, saved gates, x, w_ih, w_hh, h0, c0, keep, reverse
    #[allow(clippy::type_complexity)]
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        bool,
    );

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_states = grads.consume::<B>(&ops.node);
        let (states, saved, x, w_ih, w_hh, h0, c0, keep, reverse) = ops.state;
        let (d_x, d_w_ih, d_bias, d_w_hh, d_h0, d_c0) =
            B::lstm_backward(d_states, states, saved, x, w_ih, w_hh, h0, c0, keep, reverse);
        register::<B, _>(
            grads,
            ops.parents.map(|p| p.map(|n| n.id)),
            [d_x, d_w_ih, d_bias, d_w_hh, d_h0, d_c0],
        );
    }
}

#[derive(Debug)]
struct DenseBackward;

impl<B: Backend + FusedBackend> Backward<B, 3> for DenseBackward {
    /// x, w
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        let [px, pw, pb] = ops.parents;
        let (dx, dw, db) = B::dense_backward(dy, x, w, px.is_some());
        register::<B, _>(grads, [px, pw, pb].map(|p| p.map(|n| n.id)), [dx, dw, db]);
    }
}

#[derive(Debug)]
struct ConvBackward;

impl<B: Backend + FusedBackend> Backward<B, 3> for ConvBackward {
    /// x, w, the output (for the ReLU's mask; x again without it), options, relu
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, ConvOptions<2>, bool);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, w, y, options, relu) = ops.state;
        let [px, pw, pb] = ops.parents;
        let (dx, dw, db) = B::conv2d_backward(dy, x, w, y, options, relu, px.is_some());
        register::<B, _>(grads, [px, pw, pb].map(|p| p.map(|n| n.id)), [dx, dw, db]);
    }
}

#[derive(Debug)]
struct MaxPoolBackward;

impl<B: Backend + FusedBackend> Backward<B, 1> for MaxPoolBackward {
    /// positions, h, w, kh, kw
    type State = (FloatTensor<B>, usize, usize, usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (at, h, w, kh, kw) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::max_pool2d_backward(dy, at, h, w, kh, kw));
        }
    }
}

#[derive(Debug)]
struct EmbeddingBackward;

impl<B: Backend + FusedBackend> Backward<B, 1> for EmbeddingBackward {
    /// ids, vocab
    type State = (FloatTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (ids, vocab) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::fused_embedding_backward(dy, ids, vocab));
        }
    }
}

/// The element-wise operations whose backward needs one saved tensor: GELU (its input) and softmax (its output).
#[derive(Debug, Clone, Copy)]
enum SavedOneBackward {
    Gelu,
    Softmax,
}

impl<B: Backend + FusedBackend> Backward<B, 1> for SavedOneBackward {
    /// GELU's input or softmax's output
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let dx = match self {
                SavedOneBackward::Gelu => B::fused_gelu_backward(ops.state, dy),
                SavedOneBackward::Softmax => B::fused_softmax_backward(ops.state, dy),
            };
            grads.register::<B>(node.id, dx);
        }
    }
}

/// The autodiff output `y` of the element-wise operation `kind` on `x`, keeping `saved` for its backward when `x`
/// is tracked.
fn track_saved_one<B: Backend + FusedBackend, C: CheckpointStrategy>(
    kind: SavedOneBackward,
    x: FloatTensor<Autodiff<B, C>>,
    y: FloatTensor<B>,
    saved: FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    match kind.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(saved, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[derive(Debug)]
struct GruBackward;

impl<B: Backend + FusedBackend> Backward<B, 4> for GruBackward {
    /// states, saved values, w_hh, h0, keep, reverse
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        bool,
    );

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_states = grads.consume::<B>(&ops.node);
        let (states, saved, w_hh, h0, keep, reverse) = ops.state;
        let (d_xp, d_w, d_b_hn, d_h0) = B::gru_backward(d_states, states, saved, w_hh, h0, keep, reverse);
        register::<B, _>(grads, ops.parents.map(|p| p.map(|n| n.id)), [d_xp, d_w, d_b_hn, d_h0]);
    }
}

impl<B: Backend + FusedBackend, C: CheckpointStrategy> FusedBackend for Autodiff<B, C> {
    fn lstm_forward(
        x: FloatTensor<Self>,
        w_ih: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let inputs = [x, w_ih, bias, w_hh, h0, c0, keep];
        let (states, _, saved) = tracked_lstm::<B, C>(inputs, reverse, |[x, w_ih, b, w_hh, h0, c0, keep]| {
            let (states, saved) = B::lstm_forward(x, w_ih, b, w_hh, h0, c0, keep, reverse);
            (states.clone(), states, saved)
        });
        (states, Self::from_inner(saved))
    }

    fn lstm_final_forward(
        x: FloatTensor<Self>,
        w_ih: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // The same backward as the full forward's: it receives the `[B, 2H]` gradient of the final states.
        let inputs = [x, w_ih, bias, w_hh, h0, c0, keep];
        let (final_states, states, saved) =
            tracked_lstm::<B, C>(inputs, reverse, |[x, w_ih, b, w_hh, h0, c0, keep]| {
                B::lstm_final_forward(x, w_ih, b, w_hh, h0, c0, keep, reverse)
            });
        (final_states, Self::from_inner(states), Self::from_inner(saved))
    }

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
    ) {
        // Only reached when someone differentiates the backward itself; its outputs are constants.
        let (a, b, c, d, e, f) = B::lstm_backward(
            d_states.into_primitive(),
            states.into_primitive(),
            saved.into_primitive(),
            x.into_primitive(),
            w_ih.into_primitive(),
            w_hh.into_primitive(),
            h0.into_primitive(),
            c0.into_primitive(),
            keep.into_primitive(),
            reverse,
        );
        (
            Self::from_inner(a),
            Self::from_inner(b),
            Self::from_inner(c),
            Self::from_inner(d),
            Self::from_inner(e),
            Self::from_inner(f),
        )
    }

    fn dense_forward(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = B::dense_forward(x.primitive().clone(), w.primitive().clone(), b.primitive().clone());
        match DenseBackward
            .prepare::<C>([x.node(), w.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x.into_primitive(), w.into_primitive()), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn dense_inference_forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self> {
        let y = Self::dense_forward(x, w, b);
        if relu { Self::relu(y) } else { y }
    }

    fn dense_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        need_dx: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, dw, db) = B::dense_backward(dy.into_primitive(), x.into_primitive(), w.into_primitive(), need_dx);
        (Self::from_inner(dx), Self::from_inner(dw), Self::from_inner(db))
    }

    fn conv2d_forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
    ) -> FloatTensor<Self> {
        let y = B::conv2d_forward(
            x.primitive().clone(),
            w.primitive().clone(),
            b.primitive().clone(),
            options.clone(),
            relu,
        );
        match ConvBackward
            .prepare::<C>([x.node(), w.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let mask = if relu { y.clone() } else { x.clone() };
                prep.finish((x, w.into_primitive(), mask, options, relu), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn conv2d_max_pool_forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
        pool: [usize; 2],
    ) -> FloatTensor<Self> {
        let y = Self::conv2d_forward(x, w, b, options, relu);
        Self::max_pool2d_values(y, pool[0], pool[1])
    }

    fn conv2d_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        y: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
        need_dx: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, dw, db) = B::conv2d_backward(
            dy.into_primitive(),
            x.into_primitive(),
            w.into_primitive(),
            y.into_primitive(),
            options,
            relu,
            need_dx,
        );
        (Self::from_inner(dx), Self::from_inner(dw), Self::from_inner(db))
    }

    fn max_pool2d_forward(x: FloatTensor<Self>, kh: usize, kw: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = burn::backend::TensorMetadata::shape(x.primitive());
        let (h, w) = (shape[2], shape[3]);
        let (y, at) = B::max_pool2d_forward(x.primitive().clone(), kh, kw);
        let tracked = match MaxPoolBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((at.clone(), h, w, kh, kw), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (tracked, Self::from_inner(at))
    }

    fn fused_embedding(weight: FloatTensor<Self>, ids: FloatTensor<Self>) -> FloatTensor<Self> {
        let vocab = burn::backend::TensorMetadata::shape(weight.primitive())[0];
        let ids = ids.into_primitive();
        let y = B::fused_embedding(weight.primitive().clone(), ids.clone());
        match EmbeddingBackward
            .prepare::<C>([weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((ids, vocab), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_embedding_backward(dy: FloatTensor<Self>, ids: FloatTensor<Self>, vocab: usize) -> FloatTensor<Self> {
        Self::from_inner(B::fused_embedding_backward(
            dy.into_primitive(),
            ids.into_primitive(),
            vocab,
        ))
    }

    fn max_pool2d_values(x: FloatTensor<Self>, kh: usize, kw: usize) -> FloatTensor<Self> {
        Self::max_pool2d_forward(x, kh, kw).0
    }

    fn max_pool2d_backward(
        dy: FloatTensor<Self>,
        at: FloatTensor<Self>,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::max_pool2d_backward(
            dy.into_primitive(),
            at.into_primitive(),
            h,
            w,
            kh,
            kw,
        ))
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = B::fused_gelu(x.primitive().clone());
        let saved = x.primitive().clone();
        track_saved_one::<B, C>(SavedOneBackward::Gelu, x, y, saved)
    }

    fn fused_gelu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::fused_gelu_backward(x.into_primitive(), dy.into_primitive()))
    }

    fn fused_adam(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: adam::AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // An optimizer update is not differentiated: the results are constants.
        let (p, m, v) = B::fused_adam(
            param.into_primitive(),
            grad.into_primitive(),
            m.into_primitive(),
            v.into_primitive(),
            step,
        );
        (Self::from_inner(p), Self::from_inner(m), Self::from_inner(v))
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = B::fused_softmax(x.primitive().clone());
        track_saved_one::<B, C>(SavedOneBackward::Softmax, x, y.clone(), y)
    }

    fn fused_softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::fused_softmax_backward(y.into_primitive(), dy.into_primitive()))
    }

    fn gru_forward(
        xp: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        b_hn: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (states, saved) = B::gru_forward(
            xp.primitive().clone(),
            w_hh.primitive().clone(),
            b_hn.primitive().clone(),
            h0.primitive().clone(),
            keep.primitive().clone(),
            reverse,
        );
        let tracked = match GruBackward
            .prepare::<C>([xp.node(), w_hh.node(), b_hn.node(), h0.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                (
                    states.clone(),
                    saved.clone(),
                    w_hh.into_primitive(),
                    h0.into_primitive(),
                    keep.into_primitive(),
                    reverse,
                ),
                states,
            ),
            OpsKind::UnTracked(prep) => prep.finish(states),
        };
        (tracked, Self::from_inner(saved))
    }

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
    ) {
        let (a, b, c, d) = B::gru_backward(
            d_states.into_primitive(),
            states.into_primitive(),
            saved.into_primitive(),
            w_hh.into_primitive(),
            h0.into_primitive(),
            keep.into_primitive(),
            reverse,
        );
        (
            Self::from_inner(a),
            Self::from_inner(b),
            Self::from_inner(c),
            Self::from_inner(d),
        )
    }
}
