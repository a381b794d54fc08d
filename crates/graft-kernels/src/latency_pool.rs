//! Helper threads for kernels that take microseconds (a dense layer on one request's row): they spin for a while
//! after each job instead of sleeping, as ONNX Runtime's thread pool does, so the next job starts without a wake-up.
//!
//! rayon's workers go to sleep between jobs; waking one costs more than a 10 µs product gains from the second core
//! (a dense layer on one row split over rayon took 62 µs against 37 on one thread). Here each helper waits on a
//! generation counter, spinning up to [`SPIN`] after its last job and sleeping on a condition variable after that;
//! a small job that finds the helpers asleep runs on the caller alone (a wake-up costs more than it gains), and a
//! second one soon after wakes them for the rest of the burst.
//! Part `p` of a job always goes to the same thread (part 0 to the caller), so a weight split in halves stays in
//! the caches of the core that reads it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper spins after its last job before it sleeps: long enough to stay awake between the dense
/// layers of back-to-back requests, short enough not to hold a core through the other operations of a model
/// (spinning through a CNN's convolutions, 200 µs, took a core from rayon's workers: 300 µs instead of 85 at
/// batch 1).
const SPIN: Duration = Duration::from_micros(200);

/// Work from which a job wakes sleeping helpers (a wake-up takes tens of microseconds); smaller jobs then run on the
/// caller alone.
const WAKE_WORK: usize = 1 << 22;

/// A job: `run(part)` for every part, the caller doing part 0. Lives on the caller's stack; the caller waits until
/// every helper has finished with it.
type Job = dyn Fn(usize) + Sync;

struct Pool {
    helpers: usize,
    /// Bumped to hand out a job.
    generation: AtomicU64,
    /// The current job (a pointer to the caller's closure), valid while `done < helpers`.
    job: Mutex<Option<JobPtr>>,
    done: AtomicUsize,
    sleeping: AtomicUsize,
    /// Bumped to wake sleeping helpers without a job, so that they spin for the next one.
    nudge: AtomicU64,
    /// When the last job ran on its caller alone (nanoseconds since `epoch`).
    last_alone: AtomicU64,
    /// The core the last caller ran on (`usize::MAX` unknown), which a waking helper leaves to it.
    caller_cpu: AtomicUsize,
    epoch: Instant,
    wake: Condvar,
    /// One caller at a time; a second concurrent caller runs its job alone.
    caller: Mutex<()>,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);

// SAFETY: the pointer is only dereferenced while the caller that owns the closure waits for the helpers.
unsafe impl Send for JobPtr {}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        if helpers == 0 {
            return None;
        }
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            helpers,
            generation: AtomicU64::new(0),
            job: Mutex::new(None),
            done: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            nudge: AtomicU64::new(0),
            last_alone: AtomicU64::new(0),
            caller_cpu: AtomicUsize::new(usize::MAX),
            epoch: Instant::now(),
            wake: Condvar::new(),
            caller: Mutex::new(()),
        }));
        for part in 1..=helpers {
            std::thread::Builder::new()
                .name(format!("graft-latency-{part}"))
                .spawn(move || helper(pool, part))
                .ok()?;
        }
        Some(pool)
    })
}

fn helper(pool: &'static Pool, part: usize) {
    crate::flush_denormals();
    let mut seen = 0;
    leave_callers_core(pool);
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        let mut job_waiting = false;
        while !job_waiting {
            let g = pool.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                job_waiting = true;
            } else if spins.is_multiple_of(64) && started.elapsed() > SPIN {
                break;
            } else {
                std::hint::spin_loop();
            }
            spins = spins.wrapping_add(1);
        }
        if !job_waiting {
            // Asleep until a job worth waking for, or a nudge.
            let mut slot = pool.job.lock().unwrap_or_else(|e| e.into_inner());
            pool.sleeping.fetch_add(1, Ordering::SeqCst);
            let nudged = pool.nudge.load(Ordering::Acquire);
            while pool.generation.load(Ordering::Acquire) == seen && pool.nudge.load(Ordering::Acquire) == nudged {
                slot = pool.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
            }
            pool.sleeping.fetch_sub(1, Ordering::SeqCst);
            drop(slot);
            leave_callers_core(pool);
            let g = pool.generation.load(Ordering::Acquire);
            if g == seen {
                continue;
            }
            seen = g;
        }
        let job = *pool.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(job)) = job {
            // SAFETY: the caller keeps the closure alive until `done` counts this part.
            unsafe { (*job)(part) };
        }
        pool.done.fetch_add(1, Ordering::Release);
    }
}

/// Moves this helper to another core when it woke on its caller's. Linux wakes a thread on the waker's core when
/// it expects the waker to sleep soon; the caller here spins instead, so the two shared one core while the other
/// idled, for whole bursts: the MLP at batch 1 took 27–29 µs instead of 13–14 in a third of the benchmark's rounds.
/// The helper's allowed cores are narrowed to exclude the caller's (which moves it at once) and then restored (it
/// stays where it now is).
fn leave_callers_core(pool: &Pool) {
    #[cfg(target_os = "linux")]
    {
        let caller = pool.caller_cpu.load(Ordering::Relaxed);
        // SAFETY: sched_getcpu reads this thread's core; the cpu_set_t values are plain bit sets that the
        // sched_*affinity calls read or fill for this thread (pid 0) only.
        unsafe {
            let here = libc::sched_getcpu();
            if here < 0 || here as usize != caller {
                return;
            }
            let mut allowed: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if libc::sched_getaffinity(0, size, &mut allowed) != 0 || libc::CPU_COUNT(&allowed) < 2 {
                return;
            }
            let mut elsewhere = allowed;
            libc::CPU_CLR(caller, &mut elsewhere);
            if libc::sched_setaffinity(0, size, &elsewhere) == 0 {
                libc::sched_setaffinity(0, size, &allowed);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pool;
}

/// The core the calling thread runs on, if the platform says.
fn current_cpu() -> usize {
    #[cfg(target_os = "linux")]
    // SAFETY: reads this thread's core number.
    let cpu = unsafe { libc::sched_getcpu() };
    #[cfg(not(target_os = "linux"))]
    let cpu = -1;
    usize::try_from(cpu).unwrap_or(usize::MAX)
}

/// How many parts [`run`] splits a job into: the helpers plus the caller (1 without helpers).
pub(crate) fn parts() -> usize {
    pool().map_or(1, |p| p.helpers + 1)
}

/// Runs `job(part)` for every part in `0..parts()`, part 0 on this thread, and returns when all are done. `work`
/// (multiply-adds, say) decides whether a sleeping helper is woken for it ([`WAKE_WORK`]). A call while another is
/// under way (from another thread, or from inside a job) runs every part on this thread.
pub(crate) fn run(job: &(dyn Fn(usize) + Sync + '_), work: usize) {
    let Some(pool) = pool() else {
        job(0);
        return;
    };
    let Ok(_turn) = pool.caller.try_lock() else {
        (0..=pool.helpers).for_each(job);
        return;
    };
    if pool.sleeping.load(Ordering::SeqCst) > 0 {
        // Only a helper that wakes reads it, so busy bursts skip the call.
        pool.caller_cpu.store(current_cpu(), Ordering::Relaxed);
    }
    if work < WAKE_WORK && pool.sleeping.load(Ordering::SeqCst) > 0 {
        // Waking a sleeping helper costs more than a small job gains: run it here. Two such jobs within the spin
        // window are a burst (a model of dense layers, back-to-back requests): wake the helpers for the next ones.
        let now = pool.epoch.elapsed().as_nanos() as u64;
        let previous = pool.last_alone.swap(now, Ordering::AcqRel);
        if now.saturating_sub(previous) < SPIN.as_nanos() as u64 {
            pool.nudge.fetch_add(1, Ordering::AcqRel);
            drop(pool.job.lock().unwrap_or_else(|e| e.into_inner()));
            pool.wake.notify_all();
        }
        (0..=pool.helpers).for_each(job);
        return;
    }
    {
        let mut slot = pool.job.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the closure outlives its use: this call returns (and clears the slot) only after every helper
        // has finished with it, so the borrowed lifetime may be erased.
        let job: &'static Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Job>(job) };
        *slot = Some(JobPtr(job));
        pool.done.store(0, Ordering::Release);
        pool.generation.fetch_add(1, Ordering::AcqRel);
        // A helper that fell asleep since the check above must still wake for this job; helpers go to sleep
        // holding this lock, so none can slip between the check and the bump.
        if pool.sleeping.load(Ordering::SeqCst) > 0 {
            pool.wake.notify_all();
        }
    }
    job(0);
    let mut spins = 0u32;
    while pool.done.load(Ordering::Acquire) < pool.helpers {
        spins += 1;
        if spins.is_multiple_of(1024) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    *pool.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_per_job_including_after_the_helpers_slept() {
        for round in 0..3 {
            let counts: Vec<AtomicUsize> = (0..parts()).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..100 {
                run(
                    &|p| {
                        counts[p].fetch_add(1, Ordering::Relaxed);
                    },
                    WAKE_WORK,
                );
            }
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 100), "round {round}");
            // Past the spin window the helpers sleep; the next job must wake them.
            std::thread::sleep(SPIN * 3);
        }
    }

    #[test]
    fn a_job_that_calls_run_again_runs_its_inner_parts_itself() {
        let total = AtomicUsize::new(0);
        run(
            &|_| {
                run(
                    &|_| {
                        total.fetch_add(1, Ordering::Relaxed);
                    },
                    0,
                );
            },
            WAKE_WORK,
        );
        assert_eq!(total.load(Ordering::Relaxed), parts() * parts());
    }
}
