//! `[train] group_by_length`: batches of texts of similar length for a `bert` model (seeded like any batch order),
//! and a one-line error for a model it cannot help.

use serde_json::Value as Json;

use super::{FAST_MLP, expect_error, graft, repo, stderr, workdir, write};

/// `reviews.csv` in `dir`: 48 reviews of 1 to 12 filler words, "awful" ones negative and "great" ones positive.
fn reviews(dir: &std::path::Path) {
    let mut csv = String::from("review,score\n");
    for i in 0..48 {
        let (w, label) = if i % 2 == 0 { ("awful", "neg") } else { ("great", "pos") };
        csv.push_str(&format!("{} it was {w},{label}\n", "really ".repeat(i % 12)));
    }
    write(dir, "reviews.csv", &csv);
}

fn experiment(group: bool) -> String {
    let tiny = repo("crates/graft/tests/fixtures/tiny-bert");
    format!(
        r#"
[data]
dataset = {{ text = {{ path = "reviews.csv", column = "review", label = "score", tokenizer = {{ pretrained = "{tiny}", length = 24 }} }} }}
split = {{ validation = 0.25, stratify = true }}
[model]
layers = [{{ name = "bert", bert = {{ pretrained = "{tiny}" }} }}, {{ dense = {{ units = 2 }} }}]
[train]
epochs = 2
batch_size = 4
group_by_length = {group}
loss = "sparse_categorical_crossentropy"
baseline = false
"#
    )
}

fn history(dir: &std::path::Path, name: &str, exp: &str) -> Json {
    let run = dir.join(name);
    let o = graft(&[
        "train",
        &write(dir, "e.toml", exp),
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: Json = serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    m["history"].clone()
}

#[test]
fn grouped_batches_train_a_bert_model_and_repeat_with_the_seed() {
    let dir = workdir("group-by-length");
    reviews(&dir);
    let grouped = history(&dir, "grouped", &experiment(true));
    assert_eq!(grouped.as_array().unwrap().len(), 2, "{grouped}");
    // The same seed, the same batches: identical losses.
    assert_eq!(history(&dir, "again", &experiment(true)), grouped);
    // Other batches than the plain shuffle: the epoch's training loss differs.
    let plain = history(&dir, "plain", &experiment(false));
    assert_ne!(plain[0]["loss"], grouped[0]["loss"], "{plain} vs {grouped}");
}

#[test]
fn group_by_length_without_a_bert_layer_is_a_one_line_error() {
    let dir = workdir("group-by-length-error");
    let exp = FAST_MLP.replace("[train]\n", "[train]\ngroup_by_length = true\n");
    let e = expect_error(graft(&[
        "train",
        &write(&dir, "e.toml", &exp),
        "--out",
        dir.join("run").to_str().unwrap(),
    ]));
    assert!(e.contains("train.group_by_length") && e.contains("bert"), "{e}");
}
