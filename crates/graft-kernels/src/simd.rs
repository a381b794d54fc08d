//! The element-wise helpers of the fused loops: the `simd_dispatch!` macro that compiles a loop for the widest
//! vector extension this CPU has, and `exp`, `sigmoid`, `tanh` and the lane-split sums in plain arithmetic so that
//! those loops vectorize (a call into libm per element would not).

/// Defines `fn $name(args) -> R` that runs `$body` (an `#[inline(always)]` function taking the same arguments)
/// compiled for AVX-512 or for AVX2 with FMA when this CPU has them, else for the SSE2 baseline the crate is built
/// for: graft's element-wise loops (gates, GELU, softmax, Adam) then vectorize 8 or 16 wide instead of 4. std caches
/// the feature checks.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$meta])*
        #[inline(never)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn narrow($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `narrow` is compiled for.
                    return unsafe { narrow($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// `e^x` to about 3e-7 relative error, in plain arithmetic so that the gate loops vectorize (a call into libm per
/// element was a fifth of the step). Cody–Waite reduction: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts so
/// that n·ln2 is exact), e^r by its degree-6 Taylor polynomial, 2^n built in the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let power = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    p * f32::from_bits((power.wrapping_add(127) as u32) << 23)
}

/// Sums in sixteen independent lanes: one running total would chain every addition on the last (strict IEEE order
/// keeps the compiler from splitting it), which cost more than the softmax's exponentials.
#[inline(always)]
pub(crate) fn lane_sum(a: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = a.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for a in chunks {
        for k in 0..16 {
            lanes[k] += a[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
pub(crate) fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (a, b) in ca.zip(cb) {
        for k in 0..16 {
            lanes[k] += a[k] * b[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + exp(-2.0 * x)) - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_exponential_is_accurate() {
        let mut worst: f64 = 0.0;
        for k in -8000..=8000 {
            let x = k as f32 / 100.0;
            let rel = ((exp(x) as f64) - (x as f64).exp()).abs() / (x as f64).exp();
            worst = worst.max(rel);
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert!((tanh(0.5) - 0.5f32.tanh()).abs() < 1e-6 && (sigmoid(-3.0) - 0.047_425_874).abs() < 1e-6);
        // Far outside the f32 range the argument is clamped: tiny or huge, never garbage.
        assert!(exp(-200.0) > 0.0 && exp(-200.0) < 1e-37);
        assert!(exp(200.0).is_finite() && exp(200.0) > 1e38);
        assert!(sigmoid(-200.0) < 1e-37 && sigmoid(200.0) == 1.0 && tanh(-50.0) == -1.0 && tanh(50.0) == 1.0);
    }
}
