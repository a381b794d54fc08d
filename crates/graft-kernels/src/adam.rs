//! One Adam (or AdamW) update of a parameter, its gradient and both moments in a single pass on all threads (see
//! [`super`]). burn's Adam makes a dozen element-wise passes per parameter, each a new tensor and a scalar loop on
//! one thread; for a 10,000-row embedding that was a tenth of a training step.

use rayon::prelude::*;

/// The scalars of one update; see [`step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub beta1: f32,
    pub beta2: f32,
    /// `lr·√(1−β2ᵗ)/(1−β1ᵗ)`: the bias corrections folded into the step size.
    pub step_size: f32,
    /// `ε·√(1−β2ᵗ)`, so that `m̂/(√v̂ + ε)` needs no per-element division by the corrections.
    pub eps: f32,
    /// Adam's L2 penalty, added to the gradient.
    pub l2: f32,
    /// AdamW's decoupled decay factor `1 − lr·λ` on the parameter.
    pub keep: f32,
}

const CHUNK: usize = 1 << 14;

/// Updates `param`, `m` and `v` in place from `grad`.
pub fn step(s: AdamStep, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| update(s, p, g, m, v));
}

simd_dispatch! {
    fn update(s: AdamStep, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) => update_body
}

#[inline(always)]
fn update_body(s: AdamStep, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
    for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g + s.l2 * *p;
        *m = s.beta1 * *m + (1.0 - s.beta1) * g;
        *v = s.beta2 * *v + (1.0 - s.beta2) * g * g;
        *p = s.keep * *p - s.step_size * *m / (v.sqrt() + s.eps);
    }
}
