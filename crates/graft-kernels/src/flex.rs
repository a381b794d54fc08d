//! [`FusedBackend`] on the flex backend: each operation takes the tensors' f32 values, runs its kernel module on
//! plain buffers and wraps the results back into flex tensors.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;
use burn::tensor::ops::ConvOptions;

use crate::backend::FusedBackend;
use crate::dense_panels::Panels;
use crate::recurrence::Dims;
use crate::{
    adam, conv, conv_channels, conv_winograd, dense, dense_panels, embedding, gelu, gru, lstm, max_pool, softmax,
};

fn f32s(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("an f32 tensor").to_vec()),
    }
}

/// `t` with storage that holds exactly its elements in order, so `storage_mut` updates it in place (copying only
/// when the storage is shared).
fn writable(t: FlexTensor) -> FlexTensor {
    let layout = t.layout();
    let n = layout.num_elements();
    if layout.is_contiguous() && layout.start_offset() == 0 && t.storage::<f32>().len() == n {
        return t;
    }
    let shape = layout.shape().to_vec();
    flex(f32s(&t).into_owned(), shape)
}

fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// What inference calls keep of a model's weights from call to call (a dense weight's panels, a convolution's
/// transposed weight), each entry with a clone of its weight tensor: the clone keeps the weight's storage alive (so
/// no other tensor's values can appear at its address) and shared (so nothing updates it in place: burn-flex copies
/// shared storage before writing), which makes the values' address and length a key that cannot go stale. An entry
/// goes when its clone is the storage's last holder, and least recently used entries go first beyond
/// [`KEPT_BYTES`].
static KEPT: std::sync::Mutex<Vec<Kept>> = std::sync::Mutex::new(Vec::new());

/// The most bytes [`KEPT`] holds (MiniLM's 22 M dense weights take 88 MB as panels).
const KEPT_BYTES: usize = 256 << 20;

struct Kept {
    /// Held so that the key stays valid, and to see when the model has let go of the weight: see [`KEPT`].
    weight: FlexTensor,
    /// The weight's values (address and length), and what was made of them (`Form`).
    key: (usize, usize, Form),
    value: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    bytes: usize,
    /// When it was last asked for (a count of lookups).
    used: u64,
}

/// What an entry of [`KEPT`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `dense_panels::Panels` for this many outputs.
    DensePanels(usize),
    /// `conv_channels::transposed_weight` for this many output channels.
    ConvTransposed(usize),
    /// `conv_winograd::transformed_weight` for this many output channels.
    ConvWinograd(usize),
}

/// What `make` gives for `w`'s values, from [`KEPT`] or made now and kept there (`bytes`: its size); `None` for a
/// weight whose values are not contiguous.
fn kept<T: Send + Sync + 'static>(
    w: &FlexTensor,
    form: Form,
    make: impl FnOnce(&[f32]) -> T,
    bytes: impl Fn(&T) -> usize,
) -> Option<std::sync::Arc<T>> {
    static LOOKUPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let values = w.as_slice::<f32>()?;
    let key = (values.as_ptr() as usize, values.len(), form);
    let now = LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut cache = KEPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // A weight that only this cache still holds (the model dropped it, or training replaced it) cannot be asked
    // for again.
    cache.retain(|e| !e.weight.is_unique());
    if let Some(hit) = cache.iter_mut().find(|e| e.key == key) {
        hit.used = now;
        return hit.value.clone().downcast::<T>().ok();
    }
    let value = std::sync::Arc::new(make(values));
    let size = bytes(&value);
    let mut total: usize = cache.iter().map(|e| e.bytes).sum();
    while !cache.is_empty() && total + size > KEPT_BYTES {
        let oldest = (0..cache.len()).min_by_key(|&i| cache[i].used).expect("not empty");
        total -= cache.swap_remove(oldest).bytes;
    }
    cache.push(Kept {
        weight: w.clone(),
        key,
        value: value.clone(),
        bytes: size,
        used: now,
    });
    Some(value)
}

/// `w` `[out, in]` as panels ([`kept`]).
fn packed_weight(w: &FlexTensor, out_f: usize, in_f: usize) -> Option<std::sync::Arc<Panels>> {
    kept(
        w,
        Form::DensePanels(out_f),
        |v| Panels::new(v, out_f, in_f),
        Panels::bytes,
    )
}

/// The geometry of a convolution of an input shaped `xs` with a weight shaped `ws` into `output` positions.
fn conv_geometry(xs: &[usize], ws: &[usize], output: [usize; 2], options: &ConvOptions<2>) -> conv::Geometry {
    conv::Geometry {
        batch: xs[0],
        in_channels: xs[1],
        out_channels: ws[0],
        input: [xs[2], xs[3]],
        output,
        kernel: [ws[2], ws[3]],
        stride: options.stride,
        pad_begin: [options.padding[0].0, options.padding[1].0],
        dilation: options.dilation,
    }
}

/// The geometry of a convolution of `x` with `w`, its output size from the input, padding, dilation and stride.
fn forward_geometry(x: &FlexTensor, w: &FlexTensor, options: &ConvOptions<2>) -> conv::Geometry {
    let (xs, ws) = (x.layout().shape(), w.layout().shape());
    let out = |axis: usize| {
        let (begin, end) = options.padding[axis];
        let span = options.dilation[axis] * (ws[2 + axis] - 1) + 1;
        (xs[2 + axis] + begin + end).saturating_sub(span) / options.stride[axis] + 1
    };
    conv_geometry(xs, ws, [out(0), out(1)], options)
}

/// `[B, T, width·H]` → the run's sizes.
fn dims_of(t: &FlexTensor, width: usize) -> Dims {
    let shape = t.layout().shape();
    Dims {
        batch: shape[0],
        steps: shape[1],
        hidden: shape[2] / width,
    }
}

/// An LSTM run's sizes and input features from its input `[B, T, F]` and recurrent weight `[4H, H]`.
fn lstm_dims(x: &FlexTensor, w_hh: &FlexTensor) -> (Dims, usize) {
    let (xs, ws) = (x.layout().shape(), w_hh.layout().shape());
    let d = Dims {
        batch: xs[0],
        steps: xs[1],
        hidden: ws[1],
    };
    (d, xs[2])
}

impl FusedBackend for Flex {
    fn lstm_forward(
        x: FlexTensor,
        w_ih: FlexTensor,
        bias: FlexTensor,
        w_hh: FlexTensor,
        h0: FlexTensor,
        c0: FlexTensor,
        keep: FlexTensor,
        reverse: bool,
    ) -> (FlexTensor, FlexTensor) {
        let (d, features) = lstm_dims(&x, &w_hh);
        let (x, w_ih, bias) = (f32s(&x), f32s(&w_ih), f32s(&bias));
        let input = lstm::Input {
            x: &x,
            features,
            w_ih: &w_ih,
            bias: &bias,
        };
        let (states, saved) = lstm::forward(d, input, &f32s(&w_hh), &f32s(&h0), &f32s(&c0), &f32s(&keep), reverse);
        (
            flex(states, vec![d.batch, d.steps, 2 * d.hidden]),
            flex(saved, vec![d.batch, d.steps, lstm::SAVED * d.hidden]),
        )
    }

    fn lstm_final_forward(
        x: FlexTensor,
        w_ih: FlexTensor,
        bias: FlexTensor,
        w_hh: FlexTensor,
        h0: FlexTensor,
        c0: FlexTensor,
        keep: FlexTensor,
        reverse: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (states, saved) = Self::lstm_forward(x, w_ih, bias, w_hh, h0, c0, keep, reverse);
        let shape = states.layout().shape();
        let (b, t, width) = (shape[0], shape[1], shape[2]);
        let last = if reverse { 0 } else { t.saturating_sub(1) };
        let all = f32s(&states);
        let final_states: Vec<f32> = (0..b)
            .flat_map(|bi| all[(bi * t + last) * width..][..width].iter().copied())
            .collect();
        (flex(final_states, vec![b, width]), states, saved)
    }

    fn lstm_backward(
        d_states: FlexTensor,
        states: FlexTensor,
        saved: FlexTensor,
        x: FlexTensor,
        w_ih: FlexTensor,
        w_hh: FlexTensor,
        h0: FlexTensor,
        c0: FlexTensor,
        keep: FlexTensor,
        reverse: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        let (d, features) = lstm_dims(&x, &w_hh);
        let (x_shape, w_ih_shape) = (x.layout().shape().to_vec(), w_ih.layout().shape().to_vec());
        let (x, w_ih) = (f32s(&x), f32s(&w_ih));
        // The backward does not read the bias.
        let input = lstm::Input {
            x: &x,
            features,
            w_ih: &w_ih,
            bias: &[],
        };
        let d_states_values = f32s(&d_states);
        let d_states = match d_states.layout().shape().len() {
            2 => lstm::DStates::Final(&d_states_values),
            _ => lstm::DStates::Every(&d_states_values),
        };
        let g = lstm::backward(
            d,
            d_states,
            &f32s(&states),
            &f32s(&saved),
            input,
            &f32s(&w_hh),
            &f32s(&h0),
            &f32s(&c0),
            &f32s(&keep),
            reverse,
        );
        let (b, h) = (d.batch, d.hidden);
        (
            flex(g.x, x_shape),
            flex(g.w_ih, w_ih_shape),
            flex(g.bias, vec![4 * h]),
            flex(g.w_hh, vec![4 * h, h]),
            flex(g.h0, vec![b, h]),
            flex(g.c0, vec![b, h]),
        )
    }

    fn dense_forward(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
        let n = x.layout().shape()[0];
        let out_f = b.layout().shape()[0];
        flex(dense::forward(n, &f32s(&x), &f32s(&w), &f32s(&b)), vec![n, out_f])
    }

    fn dense_inference_forward(x: FlexTensor, w: FlexTensor, b: FlexTensor, relu: bool) -> FlexTensor {
        let n = x.layout().shape()[0];
        let (out_f, in_f) = (w.layout().shape()[0], w.layout().shape()[1]);
        if dense::panels_take(n, out_f)
            && let Some(panels) = packed_weight(&w, out_f, in_f)
        {
            return flex(
                dense_panels::forward(n, &f32s(&x), &panels, &f32s(&b), relu),
                vec![n, out_f],
            );
        }
        if dense::few_panels_take(n, out_f)
            && let Some(panels) = packed_weight(&w, out_f, in_f)
        {
            return flex(
                dense_panels::forward_few(n, &f32s(&x), &panels, &f32s(&b), relu),
                vec![n, out_f],
            );
        }
        let mut y = dense::forward_split(n, &f32s(&x), &f32s(&w), &f32s(&b));
        if relu {
            // NaN stays NaN, as in PyTorch's ReLU.
            y.iter_mut().for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
        }
        flex(y, vec![n, out_f])
    }

    fn dense_backward(
        dy: FlexTensor,
        x: FlexTensor,
        w: FlexTensor,
        need_dx: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (n, out_f) = (dy.layout().shape()[0], dy.layout().shape()[1]);
        let in_f = w.layout().shape()[1];
        let (dx, dw, db) = dense::backward(n, &f32s(&dy), &f32s(&x), &f32s(&w), out_f, need_dx);
        (
            dx.map_or_else(|| flex(vec![0.0], vec![1]), |dx| flex(dx, vec![n, in_f])),
            flex(dw, vec![out_f, in_f]),
            flex(db, vec![out_f]),
        )
    }

    fn conv2d_forward(x: FlexTensor, w: FlexTensor, b: FlexTensor, options: ConvOptions<2>, relu: bool) -> FlexTensor {
        let g = forward_geometry(&x, &w, &options);
        let y = conv::forward(g, &f32s(&x), &f32s(&w), &f32s(&b), relu);
        flex(y, vec![g.batch, g.out_channels, g.output[0], g.output[1]])
    }

    fn conv2d_max_pool_forward(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        options: ConvOptions<2>,
        relu: bool,
        pool: [usize; 2],
    ) -> FlexTensor {
        let g = forward_geometry(&x, &w, &options);
        let [ho, wo] = g.output;
        let shape = vec![g.batch, g.out_channels, ho / pool[0], wo / pool[1]];
        // Inference only (the graph pairs a convolution with its pool when no gradient is tracked): the weight's
        // transformed form is kept for the next call.
        if conv_winograd::takes(&g, Some(pool)) {
            let (co, ci) = (g.out_channels, g.in_channels);
            let form = Form::ConvWinograd(co);
            if let Some(u) = kept(
                &w,
                form,
                |v| conv_winograd::transformed_weight(v, co, ci),
                |u| u.len() * 4,
            ) {
                let y = conv_winograd::forward_transformed(g, &f32s(&x), &u, &f32s(&b), relu, Some(pool));
                return flex(y, shape);
            }
        }
        // The transposed form lets one request's image take the channels kernel too.
        let transposed = conv_channels::fits(&g, Some(pool))
            .then(|| {
                let co = g.out_channels;
                let form = Form::ConvTransposed(co);
                kept(&w, form, |v| conv_channels::transposed_weight(v, co), |t| t.len() * 4)
            })
            .flatten();
        let y = match transposed {
            Some(wt) if conv_channels::takes(&g, Some(pool), true) => {
                conv_channels::forward_transposed(g, &f32s(&x), &wt, &f32s(&b), relu, Some(pool))
            }
            _ => conv::forward_pooled(g, &f32s(&x), &f32s(&w), &f32s(&b), relu, pool),
        };
        flex(y, shape)
    }

    fn conv2d_backward(
        dy: FlexTensor,
        x: FlexTensor,
        w: FlexTensor,
        y: FlexTensor,
        options: ConvOptions<2>,
        relu: bool,
        need_dx: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (xs, ws, ys) = (
            x.layout().shape().to_vec(),
            w.layout().shape().to_vec(),
            dy.layout().shape().to_vec(),
        );
        let g = conv_geometry(&xs, &ws, [ys[2], ys[3]], &options);
        let y = relu.then(|| f32s(&y));
        let (dx, dw, db) = conv::backward(g, &f32s(&dy), &f32s(&x), &f32s(&w), y.as_deref(), need_dx);
        (
            dx.map_or_else(|| flex(vec![0.0], vec![1]), |dx| flex(dx, xs.clone())),
            flex(dw, ws),
            flex(db, vec![g.out_channels]),
        )
    }

    fn max_pool2d_forward(x: FlexTensor, kh: usize, kw: usize) -> (FlexTensor, FlexTensor) {
        let shape = x.layout().shape().to_vec();
        let (b, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        let (y, at) = max_pool::forward(&f32s(&x), b * c, (h, w), (kh, kw));
        let out = vec![b, c, h / kh, w / kw];
        (flex(y, out.clone()), flex(at, out))
    }

    fn max_pool2d_values(x: FlexTensor, kh: usize, kw: usize) -> FlexTensor {
        let shape = x.layout().shape().to_vec();
        let (b, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        flex(
            max_pool::values(&f32s(&x), b * c, (h, w), (kh, kw)),
            vec![b, c, h / kh, w / kw],
        )
    }

    fn max_pool2d_backward(dy: FlexTensor, at: FlexTensor, h: usize, w: usize, kh: usize, kw: usize) -> FlexTensor {
        let shape = dy.layout().shape().to_vec();
        let (b, c) = (shape[0], shape[1]);
        flex(
            max_pool::backward(&f32s(&dy), &f32s(&at), b * c, (h, w), (kh, kw)),
            vec![b, c, h, w],
        )
    }

    fn fused_embedding(weight: FlexTensor, ids: FlexTensor) -> FlexTensor {
        let dim = weight.layout().shape()[1];
        let mut shape = ids.layout().shape().to_vec();
        shape.push(dim);
        flex(embedding::forward(&f32s(&weight), dim, &f32s(&ids)), shape)
    }

    fn fused_embedding_backward(dy: FlexTensor, ids: FlexTensor, vocab: usize) -> FlexTensor {
        let dim = *dy
            .layout()
            .shape()
            .last()
            .expect("the output gradient has a feature axis");
        flex(
            embedding::backward(&f32s(&dy), &f32s(&ids), vocab, dim),
            vec![vocab, dim],
        )
    }

    fn fused_gelu(x: FlexTensor) -> FlexTensor {
        let shape = x.layout().shape().to_vec();
        flex(gelu::forward(&f32s(&x)), shape)
    }

    fn fused_gelu_backward(x: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let shape = x.layout().shape().to_vec();
        flex(gelu::backward(&f32s(&x), &f32s(&dy)), shape)
    }

    fn fused_adam(
        param: FlexTensor,
        grad: FlexTensor,
        m: FlexTensor,
        v: FlexTensor,
        step: adam::AdamStep,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (mut p, mut m, mut v) = (writable(param), writable(m), writable(v));
        adam::step(
            step,
            p.storage_mut::<f32>(),
            &f32s(&grad),
            m.storage_mut::<f32>(),
            v.storage_mut::<f32>(),
        );
        (p, m, v)
    }

    fn fused_softmax(x: FlexTensor) -> FlexTensor {
        let shape = x.layout().shape().to_vec();
        let row = shape.last().copied().unwrap_or(1);
        flex(softmax::forward(&f32s(&x), row), shape)
    }

    fn fused_softmax_backward(y: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let shape = y.layout().shape().to_vec();
        let row = shape.last().copied().unwrap_or(1);
        flex(softmax::backward(&f32s(&y), &f32s(&dy), row), shape)
    }

    fn gru_forward(
        xp: FlexTensor,
        w_hh: FlexTensor,
        b_hn: FlexTensor,
        h0: FlexTensor,
        keep: FlexTensor,
        reverse: bool,
    ) -> (FlexTensor, FlexTensor) {
        let d = dims_of(&xp, 3);
        let (states, saved) = gru::forward(
            d,
            &f32s(&xp),
            &f32s(&w_hh),
            &f32s(&b_hn),
            &f32s(&h0),
            &f32s(&keep),
            reverse,
        );
        (
            flex(states, vec![d.batch, d.steps, d.hidden]),
            flex(saved, vec![d.batch, d.steps, gru::SAVED * d.hidden]),
        )
    }

    fn gru_backward(
        d_states: FlexTensor,
        states: FlexTensor,
        saved: FlexTensor,
        w_hh: FlexTensor,
        h0: FlexTensor,
        keep: FlexTensor,
        reverse: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        let d = dims_of(&states, 1);
        let g = gru::backward(
            d,
            &f32s(&d_states),
            &f32s(&states),
            &f32s(&saved),
            &f32s(&w_hh),
            &f32s(&h0),
            &f32s(&keep),
            reverse,
        );
        let (b, t, h) = (d.batch, d.steps, d.hidden);
        (
            flex(g.xp, vec![b, t, 3 * h]),
            flex(g.w_hh, vec![3 * h, h]),
            flex(g.b_hn, vec![h]),
            flex(g.h0, vec![b, h]),
        )
    }
}
