//! The `graft` Python package as a user meets it: the extension module cargo built for this test, beside the
//! package's `__init__.py`, imported by `python3`: train an experiment, load the run, predict (plain, Monte-Carlo,
//! numpy-free nested lists), embed, and the errors as `graft.GraftError`. Needs only `python3` on the PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The extension module built with this test (`lib_graft.so` in the same `deps` folder).
fn native_module() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    for name in ["lib_graft.so", "lib_graft.dylib"] {
        for dir in [deps.clone(), deps.parent().unwrap().to_path_buf()] {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    panic!("the extension module was not built next to {}", deps.display());
}

fn package(dir: &Path) -> PathBuf {
    let root = dir.join("site");
    let pkg = root.join("graft");
    std::fs::create_dir_all(&pkg).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/graft/__init__.py");
    std::fs::copy(source, pkg.join("__init__.py")).unwrap();
    std::fs::copy(native_module(), pkg.join("_graft.so")).unwrap();
    root
}

const EXPERIMENT: &str = r#"
[data]
dataset = "digits"
split = { validation = 0.15, test = 0.2, stratify = true }
[model]
input = [1, 8, 8]
layers = [{ flatten = {} }, { name = "hidden", dense = { units = 32, activation = "relu" } }, { dropout = { rate = 0.2 } }, { dense = { units = 10 } }]
[train]
epochs = 3
batch_size = 64
optimizer = { adam = { lr = 3e-3 } }
loss = "sparse_categorical_crossentropy"
"#;

const SCRIPT: &str = r#"
import json, sys
import graft
exp, out = sys.argv[1], sys.argv[2]
report = {}
result = graft.train(exp, out)
report["epochs"] = len(result["history"])
report["test_accuracy"] = result["test"]["accuracy"]
model = graft.load(out)
report["repr"] = repr(model)
report["classes"] = model.info["output"]["classes"]
zero = [[[0.0, 0.0, 0.312, 0.812, 0.562, 0.062, 0.0, 0.0], [0.0, 0.0, 0.812, 0.938, 0.625, 0.938, 0.312, 0.0],
         [0.0, 0.188, 0.938, 0.125, 0.0, 0.688, 0.5, 0.0], [0.0, 0.25, 0.75, 0.0, 0.0, 0.5, 0.5, 0.0],
         [0.0, 0.312, 0.5, 0.0, 0.0, 0.562, 0.5, 0.0], [0.0, 0.25, 0.688, 0.0, 0.062, 0.75, 0.438, 0.0],
         [0.0, 0.125, 0.875, 0.312, 0.625, 0.75, 0.0, 0.0], [0.0, 0.0, 0.375, 0.812, 0.625, 0.0, 0.0, 0.0]]]
report["predictions"] = model.predict([zero, zero])
report["mc"] = [model.predict([zero], mc_dropout=10, seed=1), model.predict([zero], mc_dropout=10, seed=1)]
report["embedding_width"] = len(graft.embed(out, [zero], layer="hidden")[0])
errors = []
for call in (lambda: model.predict([[1, 2]]), lambda: model.predict(zero[0][0]), lambda: graft.load(out + "-missing"),
             lambda: graft.train(exp + ".missing", out + "-2"), lambda: graft.embed(out, [zero], layer="nope")):
    try:
        call()
        errors.append(None)
    except graft.GraftError as e:
        errors.append(str(e))
report["errors"] = errors
report["is_value_error"] = issubclass(graft.GraftError, ValueError)
print(json.dumps(report))
"#;

#[test]
fn the_python_package_trains_loads_predicts_and_embeds() {
    let dir = std::env::temp_dir().join(format!("graft-py-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let site = package(&dir);
    std::fs::write(dir.join("e.toml"), EXPERIMENT).unwrap();
    std::fs::write(dir.join("check.py"), SCRIPT).unwrap();
    let o = Command::new("python3")
        .arg(dir.join("check.py"))
        .arg(dir.join("e.toml"))
        .arg(dir.join("run"))
        .env("PYTHONPATH", &site)
        .output()
        .expect("python3 on the PATH");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{stderr}"));
    assert_eq!(report["epochs"], 3);
    assert!(report["test_accuracy"].as_f64().unwrap() > 0.7, "{report}");
    assert_eq!(report["classes"][0], "0");
    let predictions = report["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2);
    assert_eq!(predictions[0], predictions[1]);
    assert_eq!(predictions[0]["class"], "0", "{report}");
    assert_eq!(predictions[0]["probabilities"].as_object().unwrap().len(), 10);
    assert_eq!(report["mc"][0], report["mc"][1], "the same seed, the same passes");
    assert!(report["mc"][0][0]["mutual_information"].is_number(), "{report}");
    assert_eq!(report["embedding_width"], 32);
    let errors: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap_or("(no error)"))
        .collect();
    assert_eq!(
        errors[0],
        "inputs[0]: the model takes samples of shape [1, 8, 8] (64 numbers), this one has 2"
    );
    assert!(
        errors[1].starts_with("inputs[0]: the model takes samples"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("run-missing") && errors[2].contains("does not exist"),
        "{}",
        errors[2]
    );
    assert!(errors[3].contains("e.toml.missing"), "{}", errors[3]);
    assert!(errors[4].contains("nope"), "{}", errors[4]);
    assert_eq!(report["is_value_error"], true);
    let _ = std::fs::remove_dir_all(&dir);
}
