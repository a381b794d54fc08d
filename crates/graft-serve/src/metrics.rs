//! `GET /metrics`: request counts by route and status, request latency and batch size histograms, predictions
//! served — in the Prometheus (OpenMetrics) text format, with the `prometheus-client` crate.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Latency buckets from 100 µs to about 52 s, doubling.
#[derive(Clone)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(1e-4, 2.0, 20))
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, LatencyBuckets>,
    batch_size: Histogram,
    predictions: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("graft");
        let requests = Family::<Labels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        let latency = Family::new_with_constructor(LatencyBuckets);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response, by route",
            latency.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "batch_size",
            "Inputs per forward pass of the micro-batcher",
            batch_size.clone(),
        );
        let predictions = Counter::default();
        registry.register("predictions", "Inputs predicted", predictions.clone());
        Metrics {
            registry,
            requests,
            latency,
            batch_size,
            predictions,
        }
    }

    /// A request answered: its route, status and time taken.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        let labels = vec![
            ("route".to_string(), route.to_string()),
            ("status".to_string(), status.to_string()),
        ];
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&vec![("route".to_string(), route.to_string())])
            .observe(seconds);
    }

    /// A forward pass of the batcher over `inputs` inputs.
    pub fn batch(&self, inputs: usize) {
        self.batch_size.observe(inputs as f64);
        self.predictions.inc_by(inputs as u64);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histograms_render_as_openmetrics_text() {
        let m = Metrics::new();
        m.request("/v1/predict", 200, 0.003);
        m.request("/v1/predict", 200, 0.004);
        m.request("/v1/predict", 400, 0.001);
        m.batch(3);
        m.batch(5);
        let text = m.render();
        for line in [
            "graft_http_requests_total{route=\"/v1/predict\",status=\"200\"} 2",
            "graft_http_requests_total{route=\"/v1/predict\",status=\"400\"} 1",
            "graft_http_request_duration_seconds_count{route=\"/v1/predict\"} 3",
            "graft_batch_size_count 2",
            "graft_batch_size_sum 8.0",
            "graft_predictions_total 8",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}
