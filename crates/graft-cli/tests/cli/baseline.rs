//! The baselines of every classification and regression run: a linear model on the same inputs (and k-NN for short
//! numeric sequences) scored on the test set beside the network, in `metrics.json` and the report, with a warning
//! when the network does not beat them; `baseline = false` leaves them out.

use std::path::Path;

use graft::data::{Array, write_npy_f32};
use serde_json::Value as Json;

use super::{FAST_MLP, graft, repo, stderr, workdir, write};

fn metrics(run: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
}

fn train(exp: &str, out: &Path) -> String {
    let o = graft(&["train", exp, "--out", out.to_str().unwrap(), "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stderr(&o)
}

#[test]
fn a_classification_run_reports_its_logistic_regression_baseline() {
    let dir = workdir("baseline-classes");
    let run = dir.join("run");
    // The shipped MLP beats the linear model (0.978 against 0.958).
    let good = repo("examples/digits-mlp.toml");
    let log = train(&good, &run);
    let m = metrics(&run);
    let baselines = m["baselines"].as_array().unwrap();
    assert_eq!(baselines.len(), 1, "{m}");
    assert_eq!(baselines[0]["name"], "logistic regression on the inputs");
    // A linear model on the 8×8 digits reaches ~0.95; the scores are the network's metrics, computed the same way.
    let accuracy = baselines[0]["metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9 && accuracy < 1.0, "{accuracy}");
    for key in ["f1_macro", "balanced_accuracy", "loss", "roc_auc"] {
        assert!(baselines[0]["metrics"][key].is_number(), "{key}: {m}");
    }
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(report.contains("<h2>Baselines</h2>") && report.contains("logistic regression on the inputs"));
    // Seeded: a second run writes the same baseline.
    let again = dir.join("again");
    train(&good, &again);
    assert_eq!(metrics(&again)["baselines"], m["baselines"]);

    // A network that learned nothing (one epoch at a tiny rate) is told so, on stderr and in metrics.json.
    let weak = FAST_MLP
        .replace("epochs = 3", "epochs = 1")
        .replace("lr = 3e-3", "lr = 1e-6");
    let log_weak = train(&write(&dir, "weak.toml", &weak), &dir.join("weak"));
    assert!(log_weak.contains("does not beat a logistic regression"), "{log_weak}");
    let warnings = metrics(&dir.join("weak"))["warnings"].to_string();
    assert!(warnings.contains("does not beat a logistic regression"), "{warnings}");
    assert!(!log.contains("does not beat"), "{log}");

    // Switched off.
    let off = FAST_MLP.replace("[train]\n", "[train]\nbaseline = false\n");
    train(&write(&dir, "off.toml", &off), &dir.join("off"));
    assert!(metrics(&dir.join("off")).get("baselines").is_none());
}

#[test]
fn short_sequences_get_k_nearest_neighbours_and_values_a_linear_regression() {
    let dir = workdir("baseline-sequences");
    // 300 sequences of 6 steps × 2 features; the class is the sign of the first feature's sum, the value its sum.
    let n = 300;
    let mut state = 99u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5
    };
    let x: Vec<f32> = (0..n * 12).map(|_| uniform()).collect();
    let sums: Vec<f32> = (0..n).map(|i| (0..6).map(|t| x[i * 12 + t * 2]).sum()).collect();
    write_npy_f32(dir.join("x.npy"), &Array::new(vec![n, 6, 2], x).unwrap()).unwrap();
    let classes: Vec<f32> = sums.iter().map(|&s| if s > 0.0 { 1.0 } else { 0.0 }).collect();
    write_npy_f32(dir.join("c.npy"), &Array::new(vec![n], classes).unwrap()).unwrap();
    write_npy_f32(dir.join("v.npy"), &Array::new(vec![n, 1], sums).unwrap()).unwrap();
    let experiment = |y: &str, extra: &str, units: usize, loss: &str| {
        format!(
            r#"
[data]
dataset = {{ npy = {{ x = "x.npy", y = "{y}"{extra} }} }}
split = {{ validation = 0.2, test = 0.2 }}
[model]
layers = [{{ lstm = {{ units = 8 }} }}, {{ dense = {{ units = {units} }} }}]
[train]
epochs = 2
loss = "{loss}"
metrics = []
"#
        )
    };
    let classes = write(
        &dir,
        "classes.toml",
        &experiment(
            "c.npy",
            ", classes = [\"neg\", \"pos\"]",
            2,
            "sparse_categorical_crossentropy",
        ),
    );
    train(&classes, &dir.join("classes"));
    let m = metrics(&dir.join("classes"));
    let names: Vec<&str> = m["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["logistic regression on the inputs", "5-nearest neighbours"],
        "{m}"
    );
    // The class is a linear function of the inputs: the linear model nearly always gets it right.
    assert!(m["baselines"][0]["metrics"]["accuracy"].as_f64().unwrap() > 0.9, "{m}");
    let knn = m["baselines"][1]["metrics"]["accuracy"].as_f64().unwrap();
    assert!(knn > 0.5 && knn <= 1.0, "{m}");

    let values = write(&dir, "values.toml", &experiment("v.npy", "", 1, "mse"));
    train(&values, &dir.join("values"));
    let m = metrics(&dir.join("values"));
    assert_eq!(m["baselines"][0]["name"], "linear regression on the inputs", "{m}");
    // The value is exactly linear in the inputs.
    assert!(m["baselines"][0]["metrics"]["r2"].as_f64().unwrap() > 0.95, "{m}");
    assert!(m["baselines"][1]["metrics"]["r2"].is_number(), "{m}");
}

#[test]
fn texts_get_a_bag_of_words_logistic_regression() {
    let dir = workdir("baseline-text");
    // The label is one word of each review: a bag-of-words model separates them perfectly.
    let mut csv = String::from("review,score\n");
    for i in 0..120 {
        let (w, label) = if i % 2 == 0 { ("awful", "neg") } else { ("great", "pos") };
        let filler = ["the film", "this movie", "the plot", "our evening"][i % 4];
        csv.push_str(&format!("{filler} was {w},{label}\n"));
    }
    write(&dir, "reviews.csv", &csv);
    let exp = r#"
[data]
dataset = { text = { path = "reviews.csv", column = "review", label = "score", tokenizer = { length = 8 } } }
split = { validation = 0.2, test = 0.25, stratify = true }
[model]
layers = [{ embedding = { input_dim = 64, output_dim = 4, padding_idx = 0 } }, { global_avg_pool1d = {} }, { dense = { units = 2 } }]
[train]
epochs = 1
loss = "sparse_categorical_crossentropy"
"#;
    let run = dir.join("run");
    train(&write(&dir, "e.toml", exp), &run);
    let m = metrics(&run);
    assert_eq!(
        m["baselines"][0]["name"], "logistic regression on the term frequencies",
        "{m}"
    );
    assert_eq!(m["baselines"][0]["metrics"]["accuracy"].as_f64(), Some(1.0), "{m}");
}
