//! Dynamic micro-batching: the requests waiting when the model becomes free run as one forward pass of up to
//! `max_batch` inputs, on the one thread that holds the model, so many small concurrent requests cost about what
//! one large one does. While other requests are on their way (read, parsed, preprocessed, not yet queued) a batch
//! waits up to `max_wait` for them; a lone request never waits. A request is never split; one larger than
//! `max_batch` runs alone. Monte-Carlo
//! dropout requests run alone too: their passes are seeded per request, and their answer must not depend on what
//! else was waiting. When a batch fails, each of its requests is run on its own, so a failure reaches only the
//! request that caused it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use graft::data::Array;
pub use graft::infer::predict::McDropout;
use graft::{Error, Result};
use serde_json::Value as Json;

/// One request's preprocessed inputs and where its predictions (one JSON row per input) go.
pub struct Job {
    pub inputs: Array,
    pub mc_dropout: Option<McDropout>,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<Json>>>,
}

/// How large a batch may grow and how long its first request waits for company.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// Runs `model` over batches of the jobs from `jobs` until every sender is gone and the queue is empty.
/// `coming` says whether more requests are on their way to the queue; `observe` hears the number of inputs of
/// every forward pass.
pub fn run_batches(
    jobs: Receiver<Job>,
    limits: BatchLimits,
    coming: impl Fn() -> bool,
    mut model: impl FnMut(&Array, Option<McDropout>) -> Result<Vec<Json>>,
    mut observe: impl FnMut(usize),
) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        if first.mc_dropout.is_some() {
            run(vec![first], &mut model, &mut observe);
            continue;
        }
        let mut rows = first.inputs.len();
        let mut batch = vec![first];
        let deadline = Instant::now() + limits.max_wait;
        while rows < limits.max_batch {
            let next = match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || !coming() {
                        break;
                    }
                    // Short waits, so a request that is dropped on its way does not hold the batch to the deadline.
                    match jobs.recv_timeout(left.min(Duration::from_micros(200))) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let fits = next.mc_dropout.is_none()
                && rows + next.inputs.len() <= limits.max_batch
                && next.inputs.sample_shape() == batch[0].inputs.sample_shape();
            if !fits {
                carried = Some(next);
                break;
            }
            rows += next.inputs.len();
            batch.push(next);
        }
        run(batch, &mut model, &mut observe);
    }
}

/// One forward pass over the jobs' inputs together, the rows handed back to each; on failure each job alone.
fn run(
    batch: Vec<Job>,
    model: &mut impl FnMut(&Array, Option<McDropout>) -> Result<Vec<Json>>,
    observe: &mut impl FnMut(usize),
) {
    let mc = batch[0].mc_dropout;
    let inputs = if batch.len() == 1 {
        None
    } else {
        let mut shape = batch[0].inputs.shape.clone();
        shape[0] = batch.iter().map(|j| j.inputs.len()).sum();
        let data = batch.iter().flat_map(|j| j.inputs.data.iter().copied()).collect();
        Some(Array::new(shape, data))
    };
    let all = match &inputs {
        None => &batch[0].inputs,
        Some(Ok(joined)) => joined,
        Some(Err(_)) => return batch.into_iter().for_each(|job| run(vec![job], model, observe)),
    };
    observe(all.len());
    let result = guarded(model, all, mc).and_then(|rows| {
        if rows.len() == all.len() {
            Ok(rows)
        } else {
            Err(Error::new(format!(
                "the model gave {} rows for {} inputs",
                rows.len(),
                all.len()
            )))
        }
    });
    match result {
        Ok(mut rows) => {
            for job in batch {
                let rest = rows.split_off(job.inputs.len());
                let _ = job.reply.send(Ok(std::mem::replace(&mut rows, rest)));
            }
        }
        Err(e) if batch.len() == 1 => {
            let _ = batch.into_iter().next().map(|job| job.reply.send(Err(e)));
        }
        Err(_) => batch.into_iter().for_each(|job| run(vec![job], model, observe)),
    }
}

/// The model's answer, with a panic turned into an error: the server outlives any one request.
fn guarded(
    model: &mut impl FnMut(&Array, Option<McDropout>) -> Result<Vec<Json>>,
    inputs: &Array,
    mc: Option<McDropout>,
) -> Result<Vec<Json>> {
    catch_unwind(AssertUnwindSafe(|| model(inputs, mc))).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(Error::new(format!("internal error while predicting: {what}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    fn job(rows: usize, first: f32, mc: Option<McDropout>) -> (Job, tokio::sync::oneshot::Receiver<Result<Vec<Json>>>) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let data = (0..rows * 2).map(|i| first + (i / 2) as f32).collect();
        let job = Job {
            inputs: Array::new(vec![rows, 2], data).unwrap(),
            mc_dropout: mc,
            reply,
        };
        (job, answer)
    }

    /// Each row answered with its first value, so a test sees which inputs came back to which request.
    fn echo(inputs: &Array, _: Option<McDropout>) -> Result<Vec<Json>> {
        if inputs.data.contains(&-1.0) {
            return Err(Error::new("bad input"));
        }
        if inputs.data.contains(&-2.0) {
            panic!("the model fell over");
        }
        Ok((0..inputs.len()).map(|i| Json::from(inputs.row(i)[0])).collect())
    }

    fn answer(rx: tokio::sync::oneshot::Receiver<Result<Vec<Json>>>) -> std::result::Result<Vec<f64>, String> {
        rx.blocking_recv()
            .unwrap()
            .map(|rows| rows.iter().map(|v| v.as_f64().unwrap()).collect())
            .map_err(|e| e.to_string())
    }

    fn batches_of(jobs: Vec<Job>, max_batch: usize) -> Vec<usize> {
        let (tx, rx) = sync_channel(64);
        for j in jobs {
            tx.send(j).unwrap();
        }
        drop(tx);
        let mut sizes = vec![];
        let limits = BatchLimits {
            max_batch,
            max_wait: Duration::from_millis(50),
        };
        run_batches(rx, limits, || true, echo, |n| sizes.push(n));
        sizes
    }

    #[test]
    fn a_lone_request_does_not_wait_for_company() {
        let (tx, rx) = sync_channel(4);
        let (a, ra) = job(1, 10.0, None);
        tx.send(a).unwrap();
        let limits = BatchLimits {
            max_batch: 64,
            max_wait: Duration::from_secs(30),
        };
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| run_batches(rx, limits, || false, echo, |_| {}));
            assert_eq!(answer(ra).unwrap(), [10.0]);
            assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
            drop(tx);
        });
    }

    #[test]
    fn waiting_requests_share_a_batch_and_get_their_own_rows_back() {
        let (a, ra) = job(2, 10.0, None);
        let (b, rb) = job(1, 20.0, None);
        let (c, rc) = job(3, 30.0, None);
        assert_eq!(batches_of(vec![a, b, c], 64), [6]);
        assert_eq!(answer(ra).unwrap(), [10.0, 11.0]);
        assert_eq!(answer(rb).unwrap(), [20.0]);
        assert_eq!(answer(rc).unwrap(), [30.0, 31.0, 32.0]);
    }

    #[test]
    fn batches_stop_at_the_limit_and_large_or_mc_requests_run_alone() {
        let mc = Some(McDropout { passes: 3, seed: 1 });
        let jobs: Vec<_> = [
            (2, None),
            (2, None),
            (1, None),
            (5, None),
            (1, mc),
            (1, None),
            (1, None),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (rows, mc))| job(rows, i as f32 * 10.0, mc))
        .collect();
        let (jobs, answers): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
        assert_eq!(batches_of(jobs, 4), [4, 1, 5, 1, 2]);
        let firsts: Vec<f64> = answers.into_iter().map(|r| answer(r).unwrap()[0]).collect();
        assert_eq!(firsts, [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
    }

    #[test]
    fn a_failing_request_fails_alone() {
        let (a, ra) = job(2, 10.0, None);
        let (b, rb) = job(1, -1.0, None);
        let (c, rc) = job(1, -2.0, None);
        let (d, rd) = job(1, 40.0, None);
        // The joint batch fails, then each runs alone: 5 inputs together, then 2, 1, 1 and 1.
        assert_eq!(batches_of(vec![a, b, c, d], 64), [5, 2, 1, 1, 1]);
        assert_eq!(answer(ra).unwrap(), [10.0, 11.0]);
        assert_eq!(answer(rb).unwrap_err(), "bad input");
        assert!(answer(rc).unwrap_err().contains("the model fell over"));
        assert_eq!(answer(rd).unwrap(), [40.0]);
    }
}
