//! `graft doctor`: every check catches the fault planted for it (a deliberately broken experiment), the shipped
//! digits examples pass, and mistakes in the command are one-line errors.

use std::path::Path;

use graft::data::{Array, write_npy_f32};
use serde_json::Value as Json;

use super::{expect_error, graft, repo, stderr, workdir, write};

/// `graft doctor EXP --json --only CHECKS`: the parsed report and whether the command succeeded (no check failed).
fn doctor(exp: &str, only: &str) -> (Json, bool) {
    let o = graft(&["doctor", exp, "--json", "--only", only, "--seconds", "20"]);
    let report: Json = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("no JSON: {}", stderr(&o)));
    if !o.status.success() {
        let err = stderr(&o);
        assert!(
            err.contains("error: graft doctor:") && err.contains("checks failed"),
            "{err}"
        );
    }
    (report, o.status.success())
}

/// The check called `name` in a report.
fn check<'a>(report: &'a Json, name: &str) -> &'a Json {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

fn status<'a>(report: &'a Json, name: &str) -> &'a str {
    check(report, name)["status"].as_str().unwrap()
}

fn measured<'a>(report: &'a Json, name: &str) -> &'a str {
    check(report, name)["measured"].as_str().unwrap()
}

/// Digits with a model from `layers` (after a flatten) and the given optimizer.
fn digits(dir: &Path, name: &str, layers: &[&str], optimizer: &str) -> String {
    write(
        dir,
        name,
        &format!(
            r#"
[data]
dataset = "digits"
split = {{ validation = 0.15, test = 0.2, stratify = true }}
[model]
input = [1, 8, 8]
layers = [{{ flatten = {{}} }}, {}]
[train]
epochs = 3
batch_size = 32
optimizer = {optimizer}
loss = "sparse_categorical_crossentropy"
"#,
            layers.join(", ")
        ),
    )
}

const ADAM: &str = "{ adam = { lr = 1e-3 } }";
const HEAD: &str = "{ dense = { units = 10 } }";

/// Three well-separated Gaussian classes in 8 features (a deterministic generator), `n` rows.
fn blobs(n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut state = 12345u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) as f32
    };
    let mut x = vec![];
    let mut y = vec![];
    for i in 0..n {
        let class = i % 3;
        for f in 0..8 {
            let centre = if f % 3 == class { 2.0 } else { 0.0 };
            // Sum of uniforms: roughly normal, spread about 0.5.
            let noise = (uniform() + uniform() + uniform() - 1.5) * 0.8;
            x.push(centre + noise);
        }
        y.push(class as f32);
    }
    (x, y)
}

/// Writes `x.npy` / `y.npy` and an MLP experiment over them.
fn arrays(dir: &Path, x: Vec<f32>, y: Vec<f32>) -> String {
    let n = y.len();
    write_npy_f32(dir.join("x.npy"), &Array::new(vec![n, x.len() / n], x).unwrap()).unwrap();
    write_npy_f32(dir.join("y.npy"), &Array::new(vec![n], y).unwrap()).unwrap();
    write(
        dir,
        "e.toml",
        r#"
[data]
dataset = { npy = { x = "x.npy", y = "y.npy", classes = ["a", "b", "c"] } }
split = { validation = 0.2, test = 0.2, stratify = true }
[model]
layers = [{ dense = { units = 32, activation = "relu" } }, { dense = { units = 3 } }]
[train]
epochs = 3
batch_size = 32
optimizer = { adam = { lr = 3e-3 } }
loss = "sparse_categorical_crossentropy"
"#,
    )
}

#[test]
fn doctor_passes_the_shipped_digits_examples_and_writes_its_report() {
    let dir = workdir("doctor-examples");
    for example in ["digits.toml", "digits-mlp.toml", "digits-residual.toml"] {
        let out = dir.join(example.trim_end_matches(".toml"));
        let o = graft(&[
            "doctor",
            &repo(&format!("examples/{example}")),
            "--out",
            out.to_str().unwrap(),
            "--seconds",
            "20",
        ]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{example}: {text}\n{}", stderr(&o));
        assert!(text.contains("0 failed"), "{example}: {text}");
        let report: Json = serde_json::from_str(&std::fs::read_to_string(out.join("doctor.json")).unwrap()).unwrap();
        assert_eq!(report["checks"].as_array().unwrap().len(), 15, "{example}");
        assert!(
            report["checks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["status"] != "fail"),
            "{example}: {report}"
        );
        // The range test's curve, its chart and the page that shows it.
        let finder = &report["lr_finder"];
        assert!(finder["points"].as_array().unwrap().len() >= 50, "{example}");
        let suggested = finder["suggested"].as_f64().unwrap();
        assert!(suggested > 1e-5 && suggested < 1.0, "{example}: suggested {suggested}");
        assert!(std::fs::metadata(out.join("lr_finder.png")).unwrap().len() > 1000);
        let html = std::fs::read_to_string(out.join("doctor.html")).unwrap();
        assert!(
            html.contains("lr_finder.png") && html.contains("label_shuffle"),
            "{example}"
        );
    }
}

#[test]
fn model_faults_are_caught_by_their_checks() {
    let dir = workdir("doctor-model");
    // Twelve sigmoid layers: the gradient reaching the first is ~1e-8 of the last's.
    let sigmoid = "{ dense = { units = 32, activation = \"sigmoid\" } }";
    let mut deep = vec![sigmoid; 12];
    deep.push(HEAD);
    let (r, ok) = doctor(&digits(&dir, "vanish.toml", &deep, ADAM), "gradient_flow");
    assert!(!ok);
    assert_eq!(status(&r, "gradient_flow"), "fail", "{r}");
    assert!(
        measured(&r, "gradient_flow").contains("first trainable layer 'dense_1'"),
        "{r}"
    );

    // A bias of -10 behind a ReLU: every unit is dead from the start.
    let dead = "{ dense = { units = 64, activation = \"relu\", bias_initializer = { constant = -10.0 } } }";
    let (r, _) = doctor(&digits(&dir, "dead.toml", &[dead, HEAD], ADAM), "dead_units");
    assert_eq!(status(&r, "dead_units"), "fail", "{r}");
    assert!(
        measured(&r, "dead_units").contains("64 of 64 units of 'dense_1'"),
        "{r}"
    );

    // N(0, 1) weights on 256-wide layers: activations grow ~11× a layer and the loss starts far above ln 10.
    let wide = "{ dense = { units = 256, activation = \"relu\", kernel_initializer = { normal = { mean = 0.0, std = 1.0 } } } }";
    let (r, _) = doctor(
        &digits(&dir, "wide.toml", &[wide, wide, wide, HEAD], ADAM),
        "initial_loss,activation_scale",
    );
    assert_eq!(status(&r, "initial_loss"), "fail", "{r}");
    assert_eq!(status(&r, "activation_scale"), "warn", "{r}");

    // Weights of 1e20: the second layer's products overflow to infinity although its inputs are finite.
    let huge = "{ dense = { units = 16, activation = \"relu\", kernel_initializer = { normal = { mean = 0.0, std = 1e20 } } } }";
    let (r, _) = doctor(&digits(&dir, "huge.toml", &[huge, huge, HEAD], ADAM), "nan_layers");
    assert_eq!(status(&r, "nan_layers"), "fail", "{r}");
    assert_eq!(check(&r, "nan_layers")["details"]["layer"], "dense_2", "{r}");
    assert_eq!(check(&r, "nan_layers")["details"]["inputs_finite"], true, "{r}");

    // A rate of 1e-7: the updates are a millionth of the weights, one batch is not learned, the range test says so.
    let mlp = ["{ dense = { units = 64, activation = \"relu\" } }", HEAD];
    let (r, _) = doctor(
        &digits(&dir, "slow.toml", &mlp, "{ adam = { lr = 1e-7 } }"),
        "update_ratio,overfit_batch,lr_finder",
    );
    assert_eq!(status(&r, "update_ratio"), "warn", "{r}");
    assert_eq!(status(&r, "overfit_batch"), "fail", "{r}");
    assert_eq!(status(&r, "lr_finder"), "warn", "{r}");
    assert!(
        check(&r, "lr_finder")["advice"]
            .as_str()
            .unwrap()
            .contains("below the suggestion"),
        "{r}"
    );

    // SGD at 1e12 diverges within a few steps; the NaN is traced to the layer it appears in.
    let (r, _) = doctor(
        &digits(&dir, "fast.toml", &mlp, "{ sgd = { lr = 1e12 } }"),
        "update_ratio,overfit_batch",
    );
    assert_eq!(status(&r, "update_ratio"), "fail", "{r}");
    assert_eq!(status(&r, "overfit_batch"), "fail", "{r}");
    assert!(measured(&r, "overfit_batch").contains("NaN or infinite at step"), "{r}");
    assert!(check(&r, "overfit_batch")["details"]["layer"].is_string(), "{r}");

    // The same MLP at a sane rate passes all of these.
    let (r, ok) = doctor(
        &digits(&dir, "fine.toml", &mlp, ADAM),
        "gradient_flow,dead_units,initial_loss,activation_scale,nan_layers,update_ratio,overfit_batch",
    );
    assert!(ok, "{r}");
    assert!(
        r["checks"].as_array().unwrap().iter().all(|c| c["status"] == "pass"),
        "{r}"
    );
}

#[test]
fn data_faults_are_caught_by_their_checks() {
    let dir = workdir("doctor-data");
    let checks = "data_finite,class_balance,inputs_scaled,preprocessing_fit,duplicates,nan_layers,label_shuffle";
    // Clean data passes every data check and the label check.
    let (x, y) = blobs(600);
    let (r, ok) = doctor(&arrays(&dir, x.clone(), y.clone()), checks);
    assert!(ok, "{r}");
    for name in checks.split(',') {
        assert_eq!(status(&r, name), "pass", "{name}: {r}");
    }

    // An infinity in one row: found in the data, and traced to the first layer that reads it.
    let mut bad = x.clone();
    bad[8 * 5 + 3] = f32::INFINITY;
    let (r, _) = doctor(&arrays(&dir, bad, y.clone()), "data_finite,nan_layers");
    assert_eq!(status(&r, "data_finite"), "fail", "{r}");
    assert!(measured(&r, "data_finite").contains("feature 3"), "{r}");
    let nan = check(&r, "nan_layers");
    // The infinite row may or may not be drawn into the probe batch; when it is, the check names the reading layer.
    if nan["status"] == "fail" {
        assert_eq!(nan["details"]["inputs_finite"], false, "{r}");
    }

    // Raw units (×1000): flagged as unscaled.
    let raw: Vec<f32> = x.iter().map(|v| v * 1000.0).collect();
    let (r, _) = doctor(&arrays(&dir, raw, y.clone()), "inputs_scaled");
    assert_eq!(status(&r, "inputs_scaled"), "warn", "{r}");

    // Standardized with the statistics of every row (test rows included) before graft split them.
    let mut all = x.clone();
    for f in 0..8 {
        let col: Vec<f64> = all.iter().skip(f).step_by(8).map(|&v| v as f64).collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let std = (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64).sqrt();
        for v in all.iter_mut().skip(f).step_by(8) {
            *v = ((*v as f64 - mean) / std) as f32;
        }
    }
    let (r, _) = doctor(&arrays(&dir, all, y.clone()), "preprocessing_fit");
    assert_eq!(status(&r, "preprocessing_fit"), "warn", "{r}");
    assert!(
        measured(&r, "preprocessing_fit").contains("every row, test included"),
        "{r}"
    );

    // Every row twice: most held-out rows have their copy in training.
    let (twice_x, twice_y) = ([x.clone(), x.clone()].concat(), [y.clone(), y.clone()].concat());
    let (r, _) = doctor(&arrays(&dir, twice_x, twice_y), "duplicates");
    assert_eq!(status(&r, "duplicates"), "fail", "{r}");
    // Copies with a little noise are found as near-duplicates (in inputs of 16 features: each row written twice).
    let wide: Vec<f32> = x.chunks(8).flat_map(|r| [r, r].concat()).collect();
    let noisy: Vec<f32> = wide.iter().map(|v| v + 1e-3).collect();
    let (r, _) = doctor(
        &arrays(&dir, [wide.clone(), noisy].concat(), [y.clone(), y.clone()].concat()),
        "duplicates",
    );
    assert_eq!(status(&r, "duplicates"), "fail", "{r}");
    assert!(
        check(&r, "duplicates")["details"]["test"]["near"].as_u64().unwrap() > 0,
        "{r}"
    );
    // Distinct rows of the same width have no near-duplicates.
    let (r, _) = doctor(&arrays(&dir, wide, y.clone()), "duplicates");
    assert_eq!(status(&r, "duplicates"), "pass", "{r}");

    // Labels shuffled by a bug: the real labels teach nothing.
    let mut shuffled = y.clone();
    let mut state = 7u64;
    for i in (1..shuffled.len()).rev() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        shuffled.swap(i, (state >> 33) as usize % (i + 1));
    }
    let (r, _) = doctor(&arrays(&dir, x.clone(), shuffled), "label_shuffle");
    assert_eq!(status(&r, "label_shuffle"), "fail", "{r}");
    assert!(
        check(&r, "label_shuffle")["advice"]
            .as_str()
            .unwrap()
            .contains("aligned"),
        "{r}"
    );

    // One class with 9 of 600 examples.
    let (mut rare_x, mut rare_y) = (vec![], vec![]);
    for (i, &label) in y.iter().enumerate() {
        if label != 2.0 || i < 27 {
            rare_x.extend_from_slice(&x[i * 8..(i + 1) * 8]);
            rare_y.push(label);
        }
    }
    let (r, _) = doctor(&arrays(&dir, rare_x, rare_y), "class_balance");
    assert_eq!(status(&r, "class_balance"), "warn", "{r}");
}

#[test]
fn doctor_mistakes_are_one_line_errors() {
    let dir = workdir("doctor-errors");
    let exp = digits(&dir, "e.toml", &[HEAD], ADAM);
    let e = expect_error(graft(&["doctor", &exp, "--only", "gradient_flow,lr_findr"]));
    assert!(
        e.contains("no check named 'lr_findr'") && e.contains("lr_finder"),
        "{e}"
    );
    let e = expect_error(graft(&["doctor", &exp, "--seconds", "0"]));
    assert!(e.contains("--seconds") && e.contains("positive"), "{e}");
    let e = expect_error(graft(&["doctor", &repo("examples/digits-autoencoder.toml")]));
    assert!(e.contains("supervised") && e.contains("autoencoder"), "{e}");
    let e = expect_error(graft(&["doctor", &dir.join("missing.toml").display().to_string()]));
    assert!(e.contains("missing.toml"), "{e}");
    // A run directory where the experiment file belongs: named, with the file it holds.
    let run = dir.join("run");
    let o = graft(&["train", &exp, "--out", run.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = expect_error(graft(&["doctor", run.to_str().unwrap()]));
    assert!(e.contains("run directory") && e.contains("experiment.toml"), "{e}");
    let e = expect_error(graft(&["train", dir.to_str().unwrap(), "--out", run.to_str().unwrap()]));
    assert!(e.contains("a folder, not an experiment file"), "{e}");
}
