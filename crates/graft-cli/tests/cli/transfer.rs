//! `[train] transfer` from the CLI, on the tiny random BERT of the fixtures: `auto` measures the data, prints and
//! records its choice and evidence (metrics.json, the report, `--plan`), and trains exactly what the named strategy
//! trains; the fixed strategies freeze, cache and fine-tune the blocks they say; a budget tries two strategies on
//! the validation split; mistakes are one-line errors.

use std::path::Path;

use super::{expect_error, graft, repo, stderr, tensors, workdir, write};

fn reviews(dir: &Path, n: usize) {
    let mut csv = String::from("review,score\n");
    for i in 0..n {
        let (words, label) = if i % 3 == 0 {
            (["awful", "bad", "poor"], "neg")
        } else {
            (["great", "lovely", "fine"], "pos")
        };
        csv.push_str(&format!(
            "the film was {} and {},{label}\n",
            words[i % 3],
            words[(i + 1) % 3]
        ));
    }
    write(dir, "reviews.csv", &csv);
}

fn experiment(dir: &Path, name: &str, train: &str) -> String {
    let tiny = repo("crates/graft/tests/fixtures/tiny-bert");
    write(
        dir,
        name,
        &format!(
            r#"
[data]
dataset = {{ text = {{ path = "reviews.csv", column = "review", label = "score", tokenizer = {{ pretrained = "{tiny}", length = 12 }} }} }}
split = {{ validation = 0.2, test = 0.2, stratify = true }}
[model]
layers = [
  {{ name = "bert", bert = {{ pretrained = "{tiny}" }} }},
  {{ dropout = {{ rate = 0.1 }} }},
  {{ name = "logits", dense = {{ units = 2 }} }},
]
[train]
batch_size = 8
loss = "sparse_categorical_crossentropy"
{train}
"#
        ),
    )
}

fn metrics(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn transfer_auto_trains_exactly_the_strategy_it_names() {
    let dir = workdir("transfer-auto");
    reviews(&dir, 45);
    let tiny_weights = tensors(&Path::new(&repo("crates/graft/tests/fixtures/tiny-bert")).join("model.safetensors"));

    // auto: 45 reviews → 29 training rows, 10 in the smaller class; a text encoder is fine-tuned whole, with the
    // evidence printed.
    let auto = experiment(&dir, "auto.toml", "epochs = 4\ntransfer = \"auto\"");
    let run = dir.join("auto");
    let o = graft(&["train", &auto, "--out", run.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("transfer = auto: 29 training examples (smallest class 10), domain shift "),
        "{err}"
    );
    assert!(
        err.contains("a pretrained text encoder (10 examples in the smallest class") && err.contains("→ fine_tune_all"),
        "{err}"
    );
    let m = metrics(&run);
    let t = &m["transfer"];
    assert_eq!(t["strategy"], "fine_tune_all");
    assert_eq!(t["chosen_by"], "rule");
    assert_eq!(t["pretrained"], "bert");
    assert_eq!(t["evidence"]["train_examples"], 29);
    assert_eq!(t["evidence"]["examples_per_class"]["neg"], 10);
    assert_eq!(t["evidence"]["examples_per_class"]["pos"], 19);
    let shift = t["evidence"]["domain_shift"].as_f64().unwrap();
    assert!(shift.is_finite() && shift >= 0.0, "{t}");
    assert!(
        t["evidence"]["shift_measured_on"]
            .as_str()
            .unwrap()
            .contains("29 training texts against 320 reference sentences"),
        "{t}"
    );
    // The [train] epochs are kept; the groups are the head, then the encoder's blocks in slices from the top.
    assert_eq!(t["recipe"]["epochs"], 4);
    assert_eq!(t["recipe"]["early_stopping"], false);
    assert_eq!(
        t["recipe"]["layer_groups"],
        serde_json::json!([
            ["logits"],
            ["bert.encoder.layer.1"],
            ["bert.encoder.layer.0", "bert.embeddings"]
        ])
    );
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        report.contains("<h2>Transfer learning</h2>") && report.contains("text encoder"),
        "report"
    );
    let saved = tensors(&run.join("model.safetensors"));
    let key = "embeddings.word_embeddings.weight";
    assert_ne!(saved[&format!("bert.{key}")], tiny_weights[key]);

    // --plan says the same without training or writing anything.
    let planned = dir.join("planned");
    let o = graft(&["train", &auto, "--out", planned.to_str().unwrap(), "--plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["strategy"], "fine_tune_all");
    assert_eq!(plan["evidence"]["domain_shift"], t["evidence"]["domain_shift"]);
    assert!(!planned.exists());

    // The named strategy trains the same model, bit for bit.
    let fixed = experiment(&dir, "fixed.toml", "epochs = 4\ntransfer = \"fine_tune_all\"");
    let fixed_run = dir.join("fixed");
    let o = graft(&["train", &fixed, "--out", fixed_run.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(fixed_run.join("model.safetensors")).unwrap(),
        std::fs::read(run.join("model.safetensors")).unwrap()
    );
    assert_eq!(metrics(&fixed_run)["test"], m["test"]);
    assert_eq!(metrics(&fixed_run)["transfer"]["chosen_by"], "experiment file");
}

#[test]
fn fine_tuning_strategies_train_the_blocks_they_name() {
    let dir = workdir("transfer-fine-tune");
    reviews(&dir, 30);
    let tiny_weights = tensors(&Path::new(&repo("crates/graft/tests/fixtures/tiny-bert")).join("model.safetensors"));
    let changed = |saved: &std::collections::HashMap<String, Vec<f32>>, key: &str| {
        saved[&format!("bert.{key}")] != tiny_weights[key]
    };

    // Top block only (the recipe's epochs: at least one per group, ≈150 steps on 18 rows → capped at 20).
    let top = experiment(&dir, "top.toml", "transfer = { fine_tune_top = { blocks = 1 } }");
    let o = graft(&["train", &top, "--out", dir.join("top").to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&dir.join("top"));
    assert_eq!(m["transfer"]["strategy"], "fine_tune_top");
    assert_eq!(m["transfer"]["blocks"], 1);
    assert_eq!(m["transfer"]["recipe"]["epochs"], 20);
    assert_eq!(m["transfer"]["recipe"]["lr"], 3e-4);
    assert_eq!(
        m["transfer"]["recipe"]["layer_groups"],
        serde_json::json!([["logits"], ["bert.encoder.layer.1"]])
    );
    assert_eq!(m["history"].as_array().unwrap().len(), 20);
    let saved = tensors(&dir.join("top/model.safetensors"));
    assert!(changed(&saved, "encoder.layer.1.output.dense.weight"));
    assert!(!changed(&saved, "encoder.layer.0.output.dense.weight"));
    assert!(!changed(&saved, "embeddings.word_embeddings.weight"));

    // Everything, with the [train] epochs kept (one per group: head, block 1, block 0 + embeddings).
    let all = experiment(&dir, "all.toml", "epochs = 3\ntransfer = \"fine_tune_all\"");
    let o = graft(&["train", &all, "--out", dir.join("all").to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&dir.join("all"));
    assert_eq!(
        m["transfer"]["recipe"]["layer_groups"],
        serde_json::json!([
            ["logits"],
            ["bert.encoder.layer.1"],
            ["bert.encoder.layer.0", "bert.embeddings"]
        ])
    );
    let saved = tensors(&dir.join("all/model.safetensors"));
    assert!(changed(&saved, "encoder.layer.0.output.dense.weight"));
    assert!(changed(&saved, "embeddings.word_embeddings.weight"));
}

#[test]
fn a_budget_tries_two_strategies_on_the_validation_split() {
    let dir = workdir("transfer-budget");
    reviews(&dir, 30);
    let exp = experiment(
        &dir,
        "budget.toml",
        "epochs = 2\ntransfer = { auto = { budget_minutes = 0.02 } }",
    );
    let run = dir.join("run");
    let o = graft(&["train", &exp, "--out", run.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("transfer = auto: trying fine_tune_all") && err.contains("trying fine_tune_top"),
        "{err}"
    );
    let t = &metrics(&run)["transfer"];
    assert_eq!(t["chosen_by"], "budget trials on the validation split");
    let trials = t["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    assert_eq!(trials[0]["strategy"], "fine_tune_all");
    assert_eq!(trials[1]["strategy"], "fine_tune_top");
    let losses: Vec<f64> = trials.iter().map(|t| t["best_val_loss"].as_f64().unwrap()).collect();
    let winner = if losses[0] <= losses[1] {
        "fine_tune_all"
    } else {
        "fine_tune_top"
    };
    assert_eq!(t["strategy"], winner, "{t}");
    for strategy in ["fine_tune_all", "fine_tune_top"] {
        assert!(
            run.join("transfer-trials").join(strategy).join("metrics.json").exists(),
            "{strategy}"
        );
    }
}

#[test]
fn transfer_mistakes_are_one_line_errors() {
    let dir = workdir("transfer-errors");
    reviews(&dir, 20);
    let e = expect_error(graft(&[
        "train",
        &experiment(&dir, "a.toml", "epochs = 1\ntransfer = \"auto\"\nfreeze = [\"bert\"]"),
        "--out",
        dir.join("a").to_str().unwrap(),
    ]));
    assert!(e.contains("train.transfer") && e.contains("remove `freeze`"), "{e}");
    let e = expect_error(graft(&[
        "train",
        &experiment(&dir, "b.toml", "transfer = \"fine_tune\""),
        "--out",
        dir.join("b").to_str().unwrap(),
    ]));
    assert!(
        e.contains("unknown transfer strategy \"fine_tune\"") && e.contains("fine_tune_top"),
        "{e}"
    );
    let e = expect_error(graft(&[
        "train",
        &experiment(&dir, "c.toml", "transfer = { auto = { budget_minutes = -1 } }"),
        "--out",
        dir.join("c").to_str().unwrap(),
    ]));
    assert!(e.contains("budget_minutes must be a positive number"), "{e}");
    let e = expect_error(graft(&[
        "train",
        &experiment(&dir, "d.toml", ""),
        "--out",
        dir.join("d").to_str().unwrap(),
    ]));
    assert!(e.contains("missing field `epochs`"), "{e}");
    // A model without a pretrained part has nothing to transfer.
    let scratch = write(
        &dir,
        "scratch.toml",
        "[data]\ndataset = \"digits\"\n[model]\nlayers = [{ dense = { units = 10 } }]\n[train]\n\
         loss = \"sparse_categorical_crossentropy\"\ntransfer = \"auto\"\n",
    );
    let e = expect_error(graft(&[
        "train",
        &scratch,
        "--out",
        dir.join("e").to_str().unwrap(),
        "--plan",
    ]));
    assert!(e.contains("no pretrained part") && e.contains("train.transfer"), "{e}");
    let e = expect_error(graft(&[
        "train",
        &experiment(&dir, "f.toml", "epochs = 1"),
        "--out",
        "x",
        "--plan",
    ]));
    assert!(e.contains("nothing to plan"), "{e}");
}
