//! `graft serve`: a trained run directory behind HTTP. Requests are parsed and preprocessed on the async side (the
//! stored preprocessing, as `predict` applies it), then handed to the one thread that holds the model, which runs
//! what has queued up as one batch ([`batcher`]). Every failure is a JSON error with the message the CLI would
//! give; nothing a client sends stops the server. SIGTERM or Ctrl-C stop taking connections, finish the requests
//! in flight, and exit.
//!
//! Routes: `POST /v1/predict`, `GET /v1/model`, `GET /healthz`, `GET /metrics`.

pub mod batcher;
pub mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use burn::prelude::Device;
use graft::error::Context;
use graft::infer::predict::Predictor;
use graft::{Error, Result};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::batcher::{BatchLimits, Job, McDropout, run_batches};
use crate::metrics::Metrics;

/// How the server listens, batches and limits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The run directory (`graft train --out`).
    pub model: PathBuf,
    pub host: String,
    /// 0 picks a free port (printed when listening).
    pub port: u16,
    /// The most inputs one forward pass takes (requests queued together, never split).
    pub max_batch: usize,
    /// How long a batch waits for requests on their way (read, preprocessed, not yet queued); a lone request does
    /// not wait.
    pub max_wait: Duration,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// The most inputs one request may carry.
    pub max_inputs: usize,
    /// Requests waiting for the model beyond this many are turned away (503).
    pub max_queue: usize,
    /// A request not answered in this time gets 504.
    pub timeout: Duration,
}

impl ServeOptions {
    pub fn new(model: PathBuf) -> Self {
        ServeOptions {
            model,
            host: "127.0.0.1".into(),
            port: 8080,
            max_batch: 64,
            max_wait: Duration::from_millis(5),
            max_body_bytes: 16 << 20,
            max_inputs: 1024,
            max_queue: 1024,
            timeout: Duration::from_secs(30),
        }
    }

    fn check(&self) -> Result<()> {
        for (name, value) in [
            ("--max-batch", self.max_batch),
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-inputs", self.max_inputs),
            ("--max-queue", self.max_queue),
        ] {
            if value == 0 {
                return Err(Error::new(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

/// What the request handlers share: how to turn JSON into model inputs, the way to the model, the counters.
struct Shared {
    preprocessor: graft::data::prepare::Preprocessor,
    input_shape: Vec<usize>,
    text_column: Option<String>,
    description: Json,
    jobs: SyncSender<Job>,
    /// Requests read but not yet queued: the batcher waits for them.
    arriving: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    options: ServeOptions,
}

/// Loads the model, listens, and serves until SIGTERM or Ctrl-C; `listening` hears the bound address first.
pub fn serve(options: ServeOptions, device: Device, listening: impl FnOnce(SocketAddr)) -> Result<()> {
    options.check()?;
    let predictor = Predictor::load(&options.model, &device)?;
    predictor.check_predicts().in_file(&options.model)?;
    if predictor.graph.spec.inputs.len() != 1 {
        return Err(Error::new(format!(
            "graft serve takes models with one input; this one has {}",
            predictor.graph.spec.inputs.len()
        ))
        .in_file(&options.model));
    }
    let (jobs, queue) = sync_channel::<Job>(options.max_queue);
    let metrics = Arc::new(Metrics::new());
    let arriving = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(Shared {
        preprocessor: predictor.preprocessor.clone(),
        input_shape: predictor.graph.spec.inputs[0].shape.clone(),
        text_column: predictor.text_column.clone(),
        description: describe(&predictor, &options),
        jobs,
        arriving: Arc::clone(&arriving),
        metrics: Arc::clone(&metrics),
        options: options.clone(),
    });
    let limits = BatchLimits {
        max_batch: options.max_batch,
        max_wait: options.max_wait,
    };
    // The model thread must not hold `shared`: its sender of jobs would keep the queue open forever.
    let worker = std::thread::Builder::new()
        .name("graft-model".into())
        .spawn(move || {
            graft::kernels::flush_denormals();
            let model = |inputs: &graft::data::Array, mc: Option<McDropout>| predictor.rows(inputs, mc);
            let coming = || arriving.load(Ordering::Relaxed) > 0;
            run_batches(queue, limits, coming, model, |n| metrics.batch(n));
        })
        .map_err(|e| Error::new(format!("cannot start the model thread: {e}")))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(format!("cannot start the server's runtime: {e}")))?;
    let served = runtime.block_on(async {
        let address = format!("{}:{}", options.host, options.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| Error::new(format!("cannot listen on {address}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::new(format!("cannot listen on {address}: {e}")))?;
        listening(bound);
        let app = Router::new()
            .route("/v1/predict", post(predict))
            .route("/v1/model", get(model_description))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics_text))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(options.max_body_bytes))
            .layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), measured))
            .with_state(shared);
        axum::serve(listener, app)
            .with_graceful_shutdown(stop_signal())
            .await
            .map_err(|e| Error::new(format!("the server stopped: {e}")))
    });
    // The router, and with it the last sender of jobs, is gone: the model thread ends once its queue is empty.
    drop(runtime);
    worker
        .join()
        .map_err(|_| Error::new("the model thread stopped with a panic"))?;
    served
}

/// SIGTERM (a service manager's stop) or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("graft serve: stopping; finishing the requests in flight");
}

/// The body of `POST /v1/predict`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    inputs: Vec<Json>,
    /// Monte-Carlo dropout passes for this request.
    #[serde(default)]
    mc_dropout: Option<usize>,
    /// Seeds the dropout masks of `mc_dropout` (as `graft predict --seed`).
    #[serde(default = "default_seed")]
    seed: u64,
}

fn default_seed() -> u64 {
    42
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

/// Counts every request by route and status, and times it.
async fn measured(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_string();
    let response = next.run(request).await;
    shared
        .metrics
        .request(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// Counts a request as on its way to the batcher for as long as it lives.
struct Arriving(Arc<AtomicUsize>);

impl Arriving {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Arriving(Arc::clone(count))
    }
}

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn predict(State(shared): State<Arc<Shared>>, body: std::result::Result<Bytes, BytesRejection>) -> Response {
    let shared = &shared;
    let arriving = Arriving::new(&shared.arriving);
    let options = &shared.options;
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes (--max-body-bytes)",
                    options.max_body_bytes
                ),
            );
        }
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let request: PredictRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a predict request ({e}); send {{\"inputs\": [...]}}"),
            );
        }
    };
    if request.inputs.is_empty() {
        return error(StatusCode::BAD_REQUEST, "inputs: give at least one input");
    }
    if request.inputs.len() > options.max_inputs {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "inputs: {} inputs, more than the {} one request may carry (--max-inputs); split the request",
                request.inputs.len(),
                options.max_inputs
            ),
        );
    }
    if request.mc_dropout == Some(0) {
        return error(StatusCode::BAD_REQUEST, "mc_dropout: give at least 1 pass");
    }
    // Tokenizing and encoding are CPU work: off the threads that accept connections.
    let prepared = {
        let shared = Arc::clone(shared);
        tokio::task::spawn_blocking(move || {
            shared
                .preprocessor
                .inputs_from_json(&request.inputs, &shared.input_shape, shared.text_column.as_deref())
        })
        .await
    };
    let inputs = match prepared {
        Ok(Ok(inputs)) => inputs,
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("preprocessing failed: {e}")),
    };
    let (reply, answered) = tokio::sync::oneshot::channel();
    let job = Job {
        inputs,
        mc_dropout: request.mc_dropout.map(|passes| McDropout {
            passes,
            seed: request.seed,
        }),
        reply,
    };
    let queued = shared.jobs.try_send(job);
    drop(arriving);
    match queued {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server is busy: {} requests are waiting for the model (--max-queue); retry shortly",
                    options.max_queue
                ),
            );
        }
        Err(TrySendError::Disconnected(_)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
        }
    }
    match tokio::time::timeout(options.timeout, answered).await {
        Ok(Ok(Ok(rows))) => (StatusCode::OK, axum::Json(json!({ "predictions": rows }))).into_response(),
        Ok(Ok(Err(e))) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Ok(Err(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, "the model thread stopped"),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no answer within {:.1} s (--timeout-ms); the model is overloaded",
                options.timeout.as_secs_f64()
            ),
        ),
    }
}

async fn model_description(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.description.clone()).into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {}; the routes are POST /v1/predict, GET /v1/model, GET /healthz, GET /metrics",
            uri.path()
        ),
    )
}

/// `GET /v1/model`: what the model takes and gives, and how the server batches.
fn describe(predictor: &Predictor, options: &ServeOptions) -> Json {
    let mut description = predictor.describe();
    description["model"] = json!(options.model.display().to_string());
    description["batching"] = json!({
        "max_batch": options.max_batch,
        "max_wait_ms": options.max_wait.as_secs_f64() * 1e3,
        "max_inputs_per_request": options.max_inputs,
    });
    description["request"] =
        json!("POST /v1/predict {\"inputs\": [...], \"mc_dropout\": N (optional), \"seed\": S (optional)}");
    description
}
