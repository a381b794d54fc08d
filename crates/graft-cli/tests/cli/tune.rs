//! `graft tune`: a random search finds a better learning rate than a deliberately bad default on the shipped digits
//! MLP, records and resumes, and writes the best experiment; successive halving promotes the best third to three
//! times the epochs; a grid reaches into `model.layers[i]` and can cross-validate; mistakes are one-line errors.

use std::path::Path;

use serde_json::Value as Json;

use super::{expect_error, graft, repo, stderr, workdir, write};

/// The shipped digits MLP with a learning rate 200× too small and `epochs` epochs.
fn bad_default(dir: &Path, epochs: usize) -> String {
    let text = std::fs::read_to_string(repo("examples/digits-mlp.toml"))
        .unwrap()
        .replace("lr = 2e-3", "lr = 1e-5")
        .replace("epochs = 40", &format!("epochs = {epochs}"));
    write(dir, "mlp.toml", &text)
}

/// `graft tune EXP --space SPACE --out DIR/search --quiet EXTRA...`, which must succeed: the folder and its results.
fn search(dir: &Path, exp: &str, space: &str, extra: &[&str]) -> (std::path::PathBuf, Json) {
    let space = write(dir, "space.toml", space);
    let out = dir.join("search");
    let mut args = vec![
        "tune",
        exp,
        "--space",
        &space,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let o = graft(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = results(&out);
    (out, r)
}

fn results(out: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

#[test]
fn random_search_beats_a_bad_learning_rate_and_resumes() {
    let dir = workdir("tune-random");
    let exp = bad_default(&dir, 8);
    let space = write(
        &dir,
        "space.toml",
        "method = \"random\"\nmetric = \"val_loss\"\n[params]\n\"train.optimizer.adam.lr\" = { loguniform = [1e-4, 1e-1] }\n",
    );
    let out = dir.join("search");
    let args = [
        "tune",
        &exp,
        "--space",
        &space,
        "--trials",
        "4",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = graft(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = results(&out);
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 5, "{r}");
    // Trial 0 is the experiment as given, with its own rate.
    assert_eq!(trials[0]["id"], 0);
    assert_eq!(trials[0]["params"]["train.optimizer.adam.lr"].as_f64(), Some(1e-5));
    let given = trials[0]["objective"].as_f64().unwrap();
    let best = &r["best"];
    let best_lr = best["params"]["train.optimizer.adam.lr"].as_f64().unwrap();
    assert!(best["id"].as_u64().unwrap() > 0, "{r}");
    assert!((1e-4..=1e-1).contains(&best_lr), "{best_lr}");
    // A rate of 1e-5 for 8 epochs leaves the loss near chance (ln 10); the best found is far below it.
    assert!(best["objective"].as_f64().unwrap() < 0.5 * given, "{r}");
    assert!(stderr(&o).contains("best: trial"), "{}", stderr(&o));
    // The best experiment, ready to train from anywhere.
    let best_toml = std::fs::read_to_string(out.join("best.toml")).unwrap();
    let doc: toml::Table = toml::from_str(&best_toml).unwrap();
    assert_eq!(doc["train"]["optimizer"]["adam"]["lr"].as_float(), Some(best_lr));
    assert_eq!(doc["train"]["epochs"].as_integer(), Some(8));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(
        csv.starts_with("trial,rung,epochs,train.optimizer.adam.lr,val_loss,status,seconds"),
        "{csv}"
    );
    assert!(std::fs::metadata(out.join("tune.png")).unwrap().len() > 1000);
    assert!(out.join("trials/003/metrics.json").exists());

    // The same command again resumes: nothing is retrained, the results are the same.
    let again = graft(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stderr(&again).matches("[resumed]").count(), 5, "{}", stderr(&again));
    let mut r2 = results(&out);
    let mut r1 = r.clone();
    for r in [&mut r1, &mut r2] {
        for t in r["trials"].as_array_mut().unwrap() {
            t["seconds"] = Json::Null;
        }
        r["best"]["seconds"] = Json::Null;
    }
    assert_eq!(r1, r2);

    // Other settings in the same folder are refused (or replaced with --overwrite).
    let e = expect_error(graft(&[
        "tune",
        &exp,
        "--space",
        &space,
        "--trials",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("--out") && e.contains("other settings"), "{e}");
}

#[test]
fn successive_halving_promotes_the_best_third() {
    let dir = workdir("tune-halving");
    let exp = bad_default(&dir, 9);
    let (_, r) = search(
        &dir,
        &exp,
        "method = \"halving\"\nmetric = \"val_accuracy\"\n[halving]\nmin_epochs = 1\neta = 3\n[params]\n\"train.optimizer.adam.lr\" = { loguniform = [1e-4, 1e-1] }\n",
        &["--trials", "5"],
    );
    let rungs: Vec<(u64, u64)> = r["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["rung"].as_u64().unwrap(), t["epochs"].as_u64().unwrap()))
        .collect();
    // 6 configurations at 1 epoch, the best 2 at 3 epochs, the best of those at 9 (the experiment's own epochs).
    let count = |rung: u64, epochs: u64| rungs.iter().filter(|x| **x == (rung, epochs)).count();
    assert_eq!((count(0, 1), count(1, 3), count(2, 9)), (6, 2, 1), "{rungs:?}");
    assert_eq!(r["best"]["rung"], 2);
    // Accuracy is maximized: the configuration promoted from rung 1 had the highest score there (ties allowed).
    let rung1: Vec<&Json> = r["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["rung"] == 1)
        .collect();
    let top = rung1
        .iter()
        .map(|t| t["objective"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let promoted = rung1.iter().find(|t| t["id"] == r["best"]["id"]).unwrap();
    assert_eq!(promoted["objective"].as_f64().unwrap(), top, "{r}");
    // And the rung-0 survivors were the top third there.
    let mut rung0: Vec<f64> = r["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["rung"] == 0)
        .map(|t| t["objective"].as_f64().unwrap())
        .collect();
    rung0.sort_by(|a, b| b.total_cmp(a));
    for t in &rung1 {
        assert!(t["objective"].is_number());
        let at0 = r["trials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["rung"] == 0 && x["id"] == t["id"])
            .unwrap()["objective"]
            .as_f64()
            .unwrap();
        assert!(at0 >= rung0[1], "{r}");
    }
}

#[test]
fn a_grid_over_a_layer_with_folds() {
    let dir = workdir("tune-grid");
    let exp = write(
        &dir,
        "e.toml",
        r#"
[data]
dataset = "digits"
[model]
input = [1, 8, 8]
layers = [{ flatten = {} }, { dense = { units = 4, activation = "relu" } }, { dense = { units = 10 } }]
[train]
epochs = 3
optimizer = { adam = { lr = 3e-3 } }
loss = "sparse_categorical_crossentropy"
"#,
    );
    let (out, r) = search(
        &dir,
        &exp,
        "method = \"grid\"\nmetric = \"val_accuracy\"\n[params]\n\"model.layers[1].dense.units\" = { choice = [8, 64] }\n",
        &["--folds", "2"],
    );
    let units: Vec<i64> = r["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["params"]["model.layers[1].dense.units"].as_i64().unwrap())
        .collect();
    assert_eq!(units, [4, 8, 64]);
    // Each trial is a 2-fold cross-validation; the widest layer wins.
    assert!(out.join("trials/002/fold-2/metrics.json").exists());
    assert_eq!(r["best"]["params"]["model.layers[1].dense.units"], 64, "{r}");
}

#[test]
fn tune_mistakes_are_one_line_errors() {
    let dir = workdir("tune-errors");
    let exp = bad_default(&dir, 1);
    let out = dir.join("o").display().to_string();
    let space = |name: &str, text: &str| write(&dir, name, text);
    let run = |space: &str, trials: &str| {
        expect_error(graft(&[
            "tune", &exp, "--space", space, "--trials", trials, "--out", &out,
        ]))
    };
    let e = run(
        &space(
            "a.toml",
            "[params]\n\"model.layers[9].dense.units\" = { choice = [8] }\n",
        ),
        "1",
    );
    assert!(
        e.contains("params.'model.layers[9].dense.units'") && e.contains("6 entries"),
        "{e}"
    );
    let e = run(
        &space(
            "b.toml",
            "[params]\n\"train.optimizer.adam.lr\" = { loguniform = [0.0, 1.0] }\n",
        ),
        "1",
    );
    assert!(e.contains("b.toml") && e.contains("0 < low < high"), "{e}");
    let e = run(
        &space(
            "c.toml",
            "[params]\n\"train.optimizer.adam.lr\" = { normal = [0.0, 1.0] }\n",
        ),
        "1",
    );
    assert!(e.contains("c.toml") && e.contains("normal"), "{e}");
    let e = run(
        &space(
            "d.toml",
            "metric = \"val_acc\"\n[params]\n\"train.batch_size\" = { choice = [16] }\n",
        ),
        "1",
    );
    assert!(
        e.contains("'val_acc' is not logged") && e.contains("val_accuracy"),
        "{e}"
    );
    let e = run(
        &space(
            "e.toml",
            "[params]\n\"model.layers[1].dense.unit\" = { choice = [8] }\n",
        ),
        "1",
    );
    assert!(
        e.contains("params.'model.layers[1].dense.unit'") && e.contains("units"),
        "{e}"
    );
    let e = run(
        &space("f.toml", "[params]\n\"train.batch_size\" = { choice = [16] }\n"),
        "0",
    );
    assert!(e.contains("--trials"), "{e}");
}
