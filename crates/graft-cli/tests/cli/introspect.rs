//! `[train] introspect`: per-layer statistics over the epochs, projections of a layer's outputs and BERT attention
//! maps reach the report and `metrics.json`; mistakes in the spec are one-line errors before training.

use serde_json::Value as Json;

use super::{FAST_MLP, expect_error, graft, repo, stderr, workdir, write};

/// `graft train EXP --out RUN --quiet`, which must succeed: the run's `metrics.json`.
fn trained(exp: &str, run: &std::path::Path) -> Json {
    let o = graft(&["train", exp, "--out", run.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn layer_statistics_and_projections_reach_the_report() {
    let dir = workdir("introspect");
    let exp = FAST_MLP.replace(
        "[train]\n",
        "[train]\nintrospect = { layer_stats = true, projection = { layer = \"out\", rows = 200 } }\n",
    );
    let run = dir.join("run");
    let m = trained(&write(&dir, "e.toml", &exp), &run);
    let stats = m["introspection"]["layer_stats"].as_array().unwrap();
    // One record per epoch, each with every layer; the dense layers have weights and gradients.
    assert_eq!(stats.len(), 3);
    let layers = stats[2]["layers"].as_array().unwrap();
    let dense: Vec<&Json> = layers.iter().filter(|l| l["kind"] == "dense").collect();
    assert_eq!(dense.len(), 2, "{layers:?}");
    for l in dense {
        assert!(
            l["weight_norm"].as_f64().unwrap() > 0.0 && l["grad_norm"].as_f64().unwrap() > 0.0,
            "{l}"
        );
    }
    // Training moves the weights: the first dense layer's norm changes between the first and the last epoch.
    let norm = |e: usize| stats[e]["layers"][1]["weight_norm"].as_f64().unwrap();
    assert_ne!(norm(0), norm(2));
    let projection = &m["introspection"]["projection"];
    assert_eq!(projection["rows"], 200);
    let explained = projection["pca_explained_variance"].as_array().unwrap();
    assert!(explained[0].as_f64().unwrap() >= explained[1].as_f64().unwrap());
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    for chart in [
        "layer_weights.png",
        "layer_gradients.png",
        "layer_activations.png",
        "projection_pca.png",
        "projection_tsne.png",
    ] {
        assert!(report.contains(chart), "{chart} not in the report");
        assert!(std::fs::metadata(run.join(chart)).unwrap().len() > 1000, "{chart}");
    }
    // Seeded: the same run gives the same numbers.
    let m2 = trained(&write(&dir, "e.toml", &exp), &dir.join("again"));
    assert_eq!(m["introspection"], m2["introspection"]);
}

/// `reviews.csv` in `dir`: 40 one-line reviews, "awful" ones negative and "great" ones positive.
fn reviews(dir: &std::path::Path) {
    let mut csv = String::from("review,score\n");
    for i in 0..40 {
        let (w, label) = if i % 2 == 0 { ("awful", "neg") } else { ("great", "pos") };
        csv.push_str(&format!("the film was {w},{label}\n"));
    }
    write(dir, "reviews.csv", &csv);
}

#[test]
fn attention_maps_of_a_bert_encoder() {
    let dir = workdir("introspect-bert");
    reviews(&dir);
    let tiny = repo("crates/graft/tests/fixtures/tiny-bert");
    let exp = format!(
        r#"
[data]
dataset = {{ text = {{ path = "reviews.csv", column = "review", label = "score", tokenizer = {{ pretrained = "{tiny}", length = 12 }} }} }}
split = {{ validation = 0.2, test = 0.2, stratify = true }}
[model]
layers = [{{ name = "bert", bert = {{ pretrained = "{tiny}" }} }}, {{ dense = {{ units = 2 }} }}]
[train]
epochs = 1
loss = "sparse_categorical_crossentropy"
introspect = {{ attention = {{ examples = 2 }} }}
"#
    );
    let run = dir.join("run");
    let m = trained(&write(&dir, "e.toml", &exp), &run);
    let maps = m["introspection"]["attention"].as_array().unwrap();
    assert_eq!(maps.len(), 2);
    // The tokens as the tokenizer names them, from [CLS] to [SEP].
    let tokens: Vec<&str> = maps[0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.first(), Some(&"[CLS]"), "{tokens:?}");
    assert_eq!(tokens.last(), Some(&"[SEP]"), "{tokens:?}");
    assert!(tokens.contains(&"the"), "{tokens:?}");
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(report.contains("attention_1.png") && report.contains("attention_2.png"));
}

#[test]
fn introspection_mistakes_are_one_line_errors() {
    let dir = workdir("introspect-errors");
    let out = dir.join("run").display().to_string();
    let with = |spec: &str| FAST_MLP.replace("[train]\n", &format!("[train]\nintrospect = {spec}\n"));
    let e = expect_error(graft(&[
        "train",
        &write(&dir, "a.toml", &with("{ projection = { layer = \"ot\" } }")),
        "--out",
        &out,
    ]));
    assert!(
        e.contains("train.introspect.projection.layer") && e.contains("'ot'") && e.contains("out"),
        "{e}"
    );
    let e = expect_error(graft(&[
        "train",
        &write(&dir, "b.toml", &with("{ attention = {} }")),
        "--out",
        &out,
    ]));
    assert!(e.contains("train.introspect.attention") && e.contains("bert"), "{e}");
    let e = expect_error(graft(&[
        "train",
        &write(&dir, "c.toml", &with("{ layer_stat = true }")),
        "--out",
        &out,
    ]));
    assert!(e.contains("layer_stat"), "{e}");
}

#[test]
fn attention_maps_of_transformer_and_attention_layers() {
    let dir = workdir("introspect-transformer");
    reviews(&dir);
    let exp = r#"
[data]
dataset = { text = { path = "reviews.csv", column = "review", label = "score", tokenizer = { length = 8, vocab_size = 30 } } }
split = { validation = 0.2, test = 0.2, stratify = true }
[model]
layers = [
  { name = "emb", embedding = { input_dim = 30, output_dim = 8, padding_idx = 0 } },
  { name = "enc", transformer_encoder = { num_heads = 2, ff_dim = 16 } },
  { name = "self", multi_head_attention = { num_heads = 2 } },
  { global_avg_pool1d = {} },
  { dense = { units = 2 } },
]
[train]
epochs = 1
loss = "sparse_categorical_crossentropy"
introspect = { attention = { examples = 1 } }
"#;
    let run = dir.join("run");
    let m = trained(&write(&dir, "e.toml", exp), &run);
    let maps = m["introspection"]["attention"].as_array().unwrap();
    assert_eq!(maps.len(), 1, "{m}");
    // The tokens of the text, padding cut off: "the film was awful" or "... great".
    let tokens: Vec<&str> = maps[0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 4, "{tokens:?}");
    assert_eq!(&tokens[..3], ["the", "film", "was"]);
    assert!(std::fs::metadata(run.join("attention_1.png")).unwrap().len() > 1000);
}
