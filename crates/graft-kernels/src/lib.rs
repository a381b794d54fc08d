//! Fused operations for the CPU (`flex`) backend, each a burn backend extension (`#[backend_extension(Flex,
//! Autodiff)]`) with a handwritten backward, where burn's composed primitives were the bottleneck (see the README's
//! Performance section for what each gained):
//!
//! - `lstm.rs`, `gru.rs`: a whole recurrent sequence per layer and direction, per step one small matmul and one
//!   vectorized gate pass, batch rows on separate threads. The GRU's input projection is one matmul outside, in
//!   ordinary autodiff; the LSTM's is part of the fused operation (on AVX-512 computed step by step with the
//!   recurrent product, `lstm_step.rs`). Padded steps (`keep` = 0) leave the state unchanged, exactly as the
//!   composed layer does.
//! - `dense.rs`: `x·Wᵀ + b` with the weight gradient in the weight's own layout (the input's only when asked); up to
//!   16 rows (serving), dot products with the weight rows where they lie (AVX-512), split over `latency_pool.rs`'s
//!   spinning helper threads; more rows from the weight packed into panels of 64 outputs (`dense_panels.rs`), once
//!   for inference (kept by `flex.rs`), per call for training.
//! - `conv.rs`, `max_pool.rs`: convolution (im2col + gemm, both passes; on AVX-512 the 3×3 forward and input
//!   gradient with channels in whole vectors by Winograd's F(2×2, 3×3), `conv_winograd.rs`, other forwards by direct
//!   convolution: output channels in the vector for many taps and several images, `conv_channels.rs`, else positions
//!   in the vector, `conv_direct.rs`) and non-overlapping max pooling.
//! - `gelu.rs`, `softmax.rs`: element-wise GELU and last-axis softmax on all threads.
//! - `embedding.rs`: the table lookup and a weight gradient built without burn-flex's zero-fill and copy.
//! - `adam.rs`: the Adam/AdamW update in one pass (used by `train/optim.rs`).
//!
//! The trait is declared in `backend.rs` and implemented in `flex.rs` (the kernels on plain f32 buffers) and
//! `autodiff.rs` (the `Backward` steps); `simd.rs`, `matmul.rs`, `transpose.rs`, `unfilled.rs` and `recurrence.rs` hold
//! what the kernels share.
//! This file keeps the tensor-level functions that graft calls.
//!
//! Other backends (and other float types, such as the float64 gradient checks) use the composed operations; both
//! are checked against the same PyTorch fixtures, and against each other.

#[macro_use]
mod simd;

mod autodiff;
mod backend;
mod conv_channels;
mod conv_direct;
mod conv_geometry;
mod conv_winograd;
mod dense_panels;
mod flex;
mod latency_pool;
mod lstm_step;
mod matmul;
mod recurrence;
mod transpose;
mod unfilled;

pub mod adam;
pub mod conv;
pub mod dense;
pub mod embedding;
pub mod gelu;
pub mod gru;
pub mod lstm;
pub mod max_pool;
pub mod softmax;

pub use backend::FusedBackend;
pub use recurrence::Dims;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::backend::{Dispatch, DispatchDevice};
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

/// Whether the fused operations run on `device`: the flex backend, with or without autodiff, unless
/// `GRAFT_FUSED=0` asks for the composed operations everywhere (to compare the two).
pub fn available(device: &Device) -> bool {
    static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let disabled = *DISABLED.get_or_init(|| std::env::var("GRAFT_FUSED").is_ok_and(|v| v == "0"));
    !disabled && matches!(device.clone().inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// Whether the fused operations take `x`: an f32 tensor on a device where they are [`available`]. (Float64, the
/// gradient checks' type, and other backends use the composed operations.)
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == burn::tensor::DType::F32 && available(&x.device())
}

/// A 2-D convolution (groups = 1) with graft's im2col + gemm forward and backward, followed by a ReLU when `relu`.
pub fn conv2d(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>, options: ConvOptions<2>, relu: bool) -> Tensor<4> {
    let y = <Dispatch as FusedBackend>::conv2d_forward(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        options,
        relu,
    );
    Tensor::<4>::from_dispatch(y)
}

/// [`conv2d`] followed by max pooling over non-overlapping `pool` windows (stride = window, no padding), for
/// inference: on a device without autodiff each image's channels are pooled while in cache, and the full
/// convolution output is never written. (Under autodiff, the two tracked operations.)
pub fn conv2d_max_pool(
    x: Tensor<4>,
    w: Tensor<4>,
    b: Tensor<1>,
    options: ConvOptions<2>,
    relu: bool,
    pool: [usize; 2],
) -> Tensor<4> {
    let y = <Dispatch as FusedBackend>::conv2d_max_pool_forward(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        options,
        relu,
        pool,
    );
    Tensor::<4>::from_dispatch(y)
}

/// The rows of `weight` `[V, D]` at `ids` `[B, T]` (token ids as whole numbers in floats) → `[B, T, D]`, with a
/// weight gradient built directly (see `embedding.rs`); the caller checks [`applies`].
pub fn embedding(weight: Tensor<2>, ids: Tensor<2>) -> Tensor<3> {
    Tensor::<3>::from_dispatch(<Dispatch as FusedBackend>::fused_embedding(
        weight.into_dispatch(),
        ids.into_dispatch(),
    ))
}

/// Max pooling of `[B, C, H, W]` over non-overlapping `kernel` windows (stride = kernel, no padding).
pub fn max_pool2d(x: Tensor<4>, kernel: [usize; 2]) -> Tensor<4> {
    let y = <Dispatch as FusedBackend>::max_pool2d_values(x.into_dispatch(), kernel[0], kernel[1]);
    Tensor::<4>::from_dispatch(y)
}

/// GELU (erf form) on all threads; the caller checks [`available`] and f32.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::<D>::from_dispatch(<Dispatch as FusedBackend>::fused_gelu(x.into_dispatch()))
}

/// One Adam/AdamW update of `param` with `grad` and the moments `m`, `v`: the new parameter and moments. The caller
/// checks [`available`] and f32.
pub fn adam<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    step: adam::AdamStep,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let (p, m, v) = <Dispatch as FusedBackend>::fused_adam(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        step,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// Softmax over the last axis on all threads; the caller checks [`available`] and f32.
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::<D>::from_dispatch(<Dispatch as FusedBackend>::fused_softmax(x.into_dispatch()))
}

/// `x` `[N, in]` · `w` `[out, in]`ᵀ + `b` `[out]` → `[N, out]`, with the weight gradient in `w`'s own layout.
pub fn dense(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    let y = <Dispatch as FusedBackend>::dense_forward(x.into_dispatch(), w.into_dispatch(), b.into_dispatch());
    Tensor::<2>::from_dispatch(y)
}

/// [`dense()`] for a model's own weight outside autodiff (serving, predicting), through the ReLU when `relu`: the
/// weight is packed once and its panels kept for the calls after (`dense_panels.rs`; a clone of `w` is kept with
/// them, see `flex.rs`). For a weight that is a new tensor on every call, use [`dense()`].
pub fn dense_inference(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>, relu: bool) -> Tensor<2> {
    let y = <Dispatch as FusedBackend>::dense_inference_forward(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        relu,
    );
    Tensor::<2>::from_dispatch(y)
}

/// The LSTM layer in one direction: input `x` `[B, T, F]`, input weight `w_ih` `[4H, F]`, `bias` `[4H]` (both of
/// PyTorch's biases, summed), recurrent weight `w_hh` `[4H, H]`, initial states `h0`, `c0` `[B, H]` and `keep`
/// `[B, T]` (1 for a real step, 0 for padding): h and c after every step, `[B, T, 2H]`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_states(
    x: Tensor<3>,
    w_ih: Tensor<2>,
    bias: Tensor<1>,
    w_hh: Tensor<2>,
    h0: Tensor<2>,
    c0: Tensor<2>,
    keep: Tensor<2>,
    reverse: bool,
) -> Tensor<3> {
    let (states, _saved) = <Dispatch as FusedBackend>::lstm_forward(
        x.into_dispatch(),
        w_ih.into_dispatch(),
        bias.into_dispatch(),
        w_hh.into_dispatch(),
        h0.into_dispatch(),
        c0.into_dispatch(),
        keep.into_dispatch(),
        reverse,
    );
    Tensor::<3>::from_dispatch(states)
}

/// [`lstm_states`] for a caller that uses only the final states: h and c after the direction's last step,
/// `[B, 2H]`. Its backward starts from their gradient alone, without a `[B, T, 2H]` tensor of zeros around it.
#[allow(clippy::too_many_arguments)]
pub fn lstm_final_states(
    x: Tensor<3>,
    w_ih: Tensor<2>,
    bias: Tensor<1>,
    w_hh: Tensor<2>,
    h0: Tensor<2>,
    c0: Tensor<2>,
    keep: Tensor<2>,
    reverse: bool,
) -> Tensor<2> {
    let (final_states, _states, _saved) = <Dispatch as FusedBackend>::lstm_final_forward(
        x.into_dispatch(),
        w_ih.into_dispatch(),
        bias.into_dispatch(),
        w_hh.into_dispatch(),
        h0.into_dispatch(),
        c0.into_dispatch(),
        keep.into_dispatch(),
        reverse,
    );
    Tensor::<2>::from_dispatch(final_states)
}

/// The GRU recurrence over `xp` `[B, T, 3H]` (projected inputs with `b_ih`, `b_hr` and `b_hz` included) with
/// recurrent weight `w_hh` `[3H, H]`, the candidate's recurrent bias `b_hn` `[H]`, initial state `[B, H]` and
/// `keep` `[B, T]`: the state `[B, T, H]` after every step.
pub fn gru_states(
    xp: Tensor<3>,
    w_hh: Tensor<2>,
    b_hn: Tensor<1>,
    h0: Tensor<2>,
    keep: Tensor<2>,
    reverse: bool,
) -> Tensor<3> {
    let (states, _saved) = <Dispatch as FusedBackend>::gru_forward(
        xp.into_dispatch(),
        w_hh.into_dispatch(),
        b_hn.into_dispatch(),
        h0.into_dispatch(),
        keep.into_dispatch(),
        reverse,
    );
    Tensor::<3>::from_dispatch(states)
}

/// Sets flush-to-zero and denormals-are-zero on the calling thread (x86-64 MXCSR; a no-op elsewhere).
///
/// Subnormal floats (below ~1.2e-38) run through x86 arithmetic tens of times slower than normal ones. Fine-tuning a
/// transformer on real text makes them: a peaked softmax leaves probabilities like e⁻⁹⁰ in the attention matrix, and
/// every gemm that reads it (P·V forward, both of its gradients) then crawls — measured here at 7 s instead of 1 s
/// per MiniLM step. Flushing them to zero changes values only below 1.2e-38, far under float32's resolution of any
/// sum they enter. PyTorch offers the same switch (`torch.set_flush_denormal`); JAX/XLA flush by default.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    #[allow(deprecated)]
    // SAFETY: reading and writing MXCSR only changes how this thread rounds subnormal results.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        const FTZ: u32 = 1 << 15;
        const DAZ: u32 = 1 << 6;
        _mm_setcsr(_mm_getcsr() | FTZ | DAZ);
    }
}

/// Flushes denormals on the calling thread and, once per process, on every thread of rayon's global pool, which
/// burn's and graft's kernels run on (whoever built the pool: its threads live as long as the process), and gives
/// each of the pool's threads a core of its own when there is one per thread (`pin_worker`). Cheap after the
/// first call; `Graph::build` and the CLI's `main` call it.
pub fn init_threads() {
    static POOL: std::sync::Once = std::sync::Once::new();
    flush_denormals();
    POOL.call_once(|| {
        let pin = !std::env::var("GRAFT_PIN_THREADS").is_ok_and(|v| v == "0");
        let threads = rayon::current_num_threads();
        rayon::broadcast(|ctx| {
            flush_denormals();
            if pin {
                pin_worker(ctx.index(), threads);
            }
        });
    });
}

/// Runs `f`, a pass over a batch of `rows` rows, on one of the pool's threads, so that the parallel operations
/// inside it fork from within the pool instead of handing each one to the pool and sleeping until it is done (two
/// context switches per operation: a training step of the MLP has some 30). A batch of at most
/// [`dense::FEW_ROWS`] rows stays on the caller: its dense products split over the latency pool, whose helper would
/// share a core with the pool's idle workers (an MLP trained at batch 8 was 1.2–1.6× slower). While `f` runs, the
/// pool's other threads are kept taking its work (`keep_awake`). A training step and a model's forward pass
/// (`graft`'s `Graph`) both run here. `GRAFT_STEP_ON_POOL=0` keeps every pass on the caller, and
/// `GRAFT_STEP_KEEP_AWAKE=0` lets the other threads sleep (to measure the gains).
pub fn on_pool<R: Send>(rows: usize, f: impl FnOnce() -> R + Send) -> R {
    static CALLER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *CALLER.get_or_init(|| std::env::var("GRAFT_STEP_ON_POOL").is_ok_and(|v| v == "0"))
        || rows <= dense::FEW_ROWS
        || rayon::current_thread_index().is_some()
    {
        return f();
    }
    // One atomic decrement per skipped pass, so that concurrent passes each count.
    let skipping = SKIP_KEEP_AWAKE
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_sub(1))
        .is_ok();
    if skipping
        || std::env::var("GRAFT_STEP_KEEP_AWAKE").is_ok_and(|v| v == "0")
        || KEEPING_AWAKE
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return rayon::scope(|_| f());
    }
    // Released when the scope has returned or unwound, its keep-awake jobs ended.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            KEEPING_AWAKE.store(false, Ordering::Release);
        }
    }
    let _release = Release;
    let done = AtomicBool::new(false);
    let runner = AtomicUsize::new(usize::MAX);
    rayon::scope(|s| {
        runner.store(rayon::current_thread_index().unwrap_or(usize::MAX), Ordering::Relaxed);
        for _ in 1..rayon::current_num_threads() {
            s.spawn(|_| keep_awake(&done, &runner));
        }
        // Set when `f` returns or unwinds: the scope waits for the spinning jobs, which stop on it.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _done = Done(&done);
        f()
    })
}

/// How long a yield of the core may take before [`keep_awake`] takes the core to be shared: alone, it returns in a
/// microsecond or two (or after the batch loader's few microseconds).
const CONTENDED: std::time::Duration = std::time::Duration::from_micros(200);
/// Steps run without [`keep_awake`] after it found its core shared.
const KEEP_AWAKE_BACKOFF: u32 = 200;
/// Whether a pass has [`keep_awake`] jobs out. One pass at a time has them: a pool thread that takes another pass's
/// keep-awake job while its own pass waits inside a split spins above that pass until the other ends, and two passes
/// doing so to each other (two threads training or serving at once) would wait on each other for ever.
static KEEPING_AWAKE: AtomicBool = AtomicBool::new(false);
/// Steps left to run without [`keep_awake`].
static SKIP_KEEP_AWAKE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Keeps a pool thread taking the step's parallel work until `done`, instead of letting it fall asleep in the step's
/// serial stretches (autodiff's bookkeeping, the loss) and wake late for the next operation: both halves of the
/// next split then waited on the wake-up (a fifth of the MLP's step samples were in the scheduler). Idle, it yields
/// its core to any other thread that wants it (the batch loader). On the thread that runs the step itself (which
/// may pick the job up while it waits inside a split) it returns at once: spinning there would wait on itself.
fn keep_awake(done: &AtomicBool, runner: &AtomicUsize) {
    if rayon::current_thread_index() == Some(runner.load(Ordering::Relaxed)) {
        return;
    }
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {}
            Some(rayon::Yield::Idle) => {
                let asked = std::time::Instant::now();
                std::thread::yield_now();
                if asked.elapsed() > CONTENDED {
                    SKIP_KEEP_AWAKE.store(KEEP_AWAKE_BACKOFF, Ordering::Relaxed);
                    return;
                }
            }
            None => return,
        }
    }
}

/// Keeps the pool's thread `index` (of `threads`) on the `index`-th core this process may use, when the process may
/// use exactly `threads` cores (the default pool; a smaller pool, sharing the machine, is left to the scheduler).
/// Linux wakes a sleeping thread on its waker's core when it expects the waker to sleep soon, and a caller waiting
/// on the pool does: after any pause (a server between requests) both workers woke on the caller's core and shared
/// it, at half speed, until the load balancer moved one some 45 ms later. The CNN at batch 64, measured 40 steps
/// after a 0.3 s pause: 27–30 steps at 1.7 ms, then 0.95 ms.
fn pin_worker(index: usize, threads: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: the cpu_set_t values are plain bit sets that sched_getaffinity fills and sched_setaffinity reads, for
    // this thread (pid 0) only.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut allowed) != 0 || libc::CPU_COUNT(&allowed) as usize != threads {
            return;
        }
        let Some(cpu) = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .nth(index)
        else {
            return;
        };
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        libc::sched_setaffinity(0, size, &one);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (index, threads);
}

#[cfg(test)]
mod tests {
    /// A pass on the pool returns its value with its parallel work done (by the runner and the kept-awake threads),
    /// a pass that panics ends in that panic instead of waiting for ever on the thread kept awake for it, and passes
    /// from several threads at once end.
    #[test]
    fn a_pass_on_the_pool_returns_and_its_panic_unwinds() {
        use rayon::prelude::*;
        for _ in 0..20 {
            let sum: u64 = super::on_pool(128, || (0..100_000u64).into_par_iter().map(|i| i * i % 7).sum());
            assert_eq!(sum, (0..100_000u64).map(|i| i * i % 7).sum::<u64>());
        }
        // With the keep-awake job (which a shared core would have turned off for the next passes).
        super::SKIP_KEEP_AWAKE.store(0, std::sync::atomic::Ordering::Relaxed);
        let unwound = std::panic::catch_unwind(|| {
            super::on_pool(128, || {
                let _: u64 = (0..1000u64).into_par_iter().sum();
                // Time for another thread to take the keep-awake job, which then spins until the pass is done.
                std::thread::sleep(std::time::Duration::from_millis(20));
                panic!("the pass failed")
            })
        });
        assert!(unwound.is_err());
        // Passes from several threads at once all end (one at a time keeps the pool awake).
        std::thread::scope(|s| {
            for t in 0..4u64 {
                s.spawn(move || {
                    for _ in 0..50 {
                        let sum: u64 = super::on_pool(128, || (0..20_000u64).into_par_iter().map(|i| i ^ t).sum());
                        assert_eq!(sum, (0..20_000u64).map(|i| i ^ t).sum::<u64>());
                    }
                });
            }
        });
    }

    use burn::prelude::*;
    use burn::tensor::Distribution;

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what} at {i}: {g} vs {w}");
        }
    }

    /// The inference operation through the kept panels gives the plain dense operation's values (with the ReLU after
    /// it), call after call, alternating with another weight of the same shape, and again after the weight is
    /// replaced by one with other values: an updated weight (which the cache's clone forces into new storage), and a
    /// new weight after the old one is dropped. Under autodiff it is the tracked operation, with gradients.
    #[test]
    fn inference_dense_matches_the_plain_one_across_weight_changes() {
        // Panels (96 outputs) split by rows, and by panels for few rows (5, 1), and too few outputs for them (10: gemm,
        // its rows split over the threads).
        for ((rows, inputs, outputs), device) in [(40, 30, 96), (5, 30, 96), (1, 64, 40), (300, 400, 10)]
            .into_iter()
            .flat_map(|shape| [(shape, Device::default()), (shape, Device::default().autodiff())])
        {
            let x = Tensor::<2>::random([rows, inputs], Distribution::Uniform(-1.0, 1.0), &device);
            let b = Tensor::<1>::random([outputs], Distribution::Uniform(-1.0, 1.0), &device);
            let mut w = Tensor::<2>::random([outputs, inputs], Distribution::Uniform(-1.0, 1.0), &device);
            if device.is_autodiff() {
                w = w.require_grad();
            }
            // Another weight of the same shape, alive throughout (as a second layer's would be).
            let other = Tensor::<2>::random([outputs, inputs], Distribution::Uniform(-1.0, 1.0), &device);
            for step in 0..4 {
                let plain = super::dense(x.clone(), other.clone(), b.clone());
                let fused = super::dense_inference(x.clone(), other.clone(), b.clone(), false);
                assert_close(
                    &values(fused),
                    &values(plain),
                    &format!("{device:?} step {step}, the other weight"),
                );
                for relu in [false, true] {
                    let plain = super::dense(x.clone(), w.clone(), b.clone());
                    let plain = if relu {
                        burn::tensor::activation::relu(plain)
                    } else {
                        plain
                    };
                    let fused = super::dense_inference(x.clone(), w.clone(), b.clone(), relu);
                    assert_close(
                        &values(fused.clone()),
                        &values(plain),
                        &format!("{device:?} step {step} relu {relu}"),
                    );
                    if device.is_autodiff() {
                        let grads = fused.sum().backward();
                        assert!(w.grad(&grads).is_some_and(|g| g.abs().sum().into_scalar::<f32>() > 0.0));
                    }
                }
                w = match step {
                    // Updated: `mul_scalar` would write in place into storage nothing else shared.
                    0 => w.mul_scalar(-0.5),
                    // Dropped, and a new weight made (which may land where the old one lay without the clone).
                    1 => {
                        drop(w);
                        Tensor::<2>::random([outputs, inputs], Distribution::Uniform(-1.0, 1.0), &device)
                    }
                    _ => w.add_scalar(0.25),
                };
                if device.is_autodiff() {
                    w = w.detach().require_grad();
                }
            }
        }
    }

    /// After `init_threads`, a product below float32's normal range is zero on this thread and on the pool's
    /// threads (without it, x86 gives the subnormal 1e-40).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn subnormal_results_are_flushed_to_zero() {
        use std::hint::black_box;
        super::init_threads();
        let tiny = || black_box(1e-30f32) * black_box(1e-10f32);
        assert_eq!(tiny(), 0.0);
        let on_pool = rayon::broadcast(|_| tiny());
        assert!(on_pool.iter().all(|&v| v == 0.0), "{on_pool:?}");
        // Normal numbers are untouched.
        assert!(black_box(1e-20f32) * black_box(1e-10f32) > 0.0);
    }
}
