//! Pretrained CNN backbones from the CLI: a ResNet-18 state dict under torchvision's keys (written through the
//! library, as a stand-in for ImageNet weights) is the `pretrained` backbone of a model that extracts frozen features (cached,
//! batch norm on its stored statistics), fine-tunes its top stage through layer groups, and takes its input size
//! and normalization from the backbone; the mistakes a user makes on the way are one-line errors.

use std::path::Path;

use burn::prelude::Device;
use graft::model::Graph;
use graft::model::spec::ModelSpec;

use super::{expect_error, graft, predict, stderr, tensors, write};

fn experiment(dir: &Path, name: &str, data: &str, model: &str, train: &str) -> String {
    let train_dir = dir.join("train").display().to_string();
    let test_dir = dir.join("test").display().to_string();
    write(
        dir,
        name,
        &format!(
            r#"
[data]
dataset = {{ images = {{ path = "{train_dir}"{data} }} }}
test = {{ images = {{ path = "{test_dir}"{data} }} }}
split = {{ validation = 0.2, stratify = true }}
[model]
layers = [
{model}
]
[train]
batch_size = 8
loss = "sparse_categorical_crossentropy"
metrics = ["accuracy"]
{train}
"#
        ),
    )
}

#[test]
fn a_pretrained_backbone_extracts_features_fine_tunes_and_explains_mistakes() {
    let dir = super::workdir("backbones");
    super::images::image_folder(&dir.join("train"), 10, 3);
    super::images::image_folder(&dir.join("test"), 4, 4);

    // The "pretrained" weights: an unnamed ResNet-18 built through the library, its batch-norm statistics moved
    // off their initial values by one training-mode pass, saved under torchvision's keys (classifier included).
    let text = "input = [3, 32, 32]\nlayers = [{ resnet18 = { output = \"logits\" } }]";
    let spec = ModelSpec::from_toml(&toml::from_str(text).unwrap(), "model").unwrap();
    let device = Device::default();
    let model = Graph::build(&spec, &device).unwrap();
    let x = graft::data::Array::new(
        vec![4, 3, 32, 32],
        (0..4 * 3 * 32 * 32).map(|i| (i as f32 * 0.37).sin()).collect(),
    )
    .unwrap();
    model
        .forward(
            vec![graft::layers::value::input_data(&x, &device).unwrap()],
            true,
            false,
        )
        .unwrap();
    std::fs::create_dir_all(dir.join("base")).unwrap();
    let base_file = dir.join("base/resnet18.safetensors");
    graft::model::io::save_safetensors(&model, &base_file).unwrap();
    let base_weights = tensors(&base_file);
    for key in [
        "conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer4.1.bn2.running_var",
        "fc.bias",
    ] {
        assert!(base_weights.contains_key(key), "{key}");
    }
    let pretrained = dir.join("base").display().to_string();

    // Feature extraction: the named backbone loads those weights, stays frozen, and its features are cached; the
    // input size is the user's, channels and normalization are ResNet's.
    let backbone = format!(r#"{{ name = "backbone", resnet18 = {{ pretrained = "{pretrained}" }} }},"#);
    let head = r#"{ dropout = { rate = 0.2 } }, { name = "logits", dense = { units = 3 } },"#;
    let features = experiment(
        &dir,
        "features.toml",
        ", size = [32, 32]",
        &format!("{backbone}\n{head}"),
        "epochs = 3\noptimizer = { adam = { lr = 1e-2 } }\nfreeze = [\"backbone\"]\ncache_features = true",
    );
    let run = dir.join("features").display().to_string();
    let o = graft(&["train", &features, "--out", &run]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("resnet18: weights from") && err.contains("base/resnet18.safetensors"),
        "{err}"
    );
    assert!(err.contains("cache_features: the output of 'backbone' [512]"), "{err}");
    let after = tensors(&dir.join("features/model.safetensors"));
    for key in ["conv1.weight", "layer3.1.bn1.running_mean", "layer4.1.conv2.weight"] {
        assert_eq!(
            after[&format!("backbone.{key}")],
            base_weights[key],
            "{key} loaded and frozen"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("features/preprocess.json")).unwrap()).unwrap();
    let images = &manifest["preprocessor"]["images"];
    assert_eq!(images["size"], serde_json::json!([32, 32]));
    assert_eq!(images["channels"], 3);
    let mean: Vec<f64> = serde_json::from_value(images["mean"].clone()).unwrap();
    assert!(
        (mean[0] - 0.485).abs() < 1e-6 && (mean[2] - 0.406).abs() < 1e-6,
        "{images}"
    );
    // predict on a folder runs the whole model, backbone included.
    let out = dir.join("predictions.csv").display().to_string();
    let o = predict(&run, &dir.join("test").display().to_string(), &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 13);

    // Fine-tuning the top stage: layer groups address the backbone's blocks by their PyTorch names; what is in no
    // group keeps its pretrained values.
    let fine = experiment(
        &dir,
        "fine.toml",
        ", size = [32, 32]",
        &format!("{backbone}\n{head}"),
        "epochs = 2\noptimizer = { adam = { lr = 1e-3 } }\n\
         layer_groups = { groups = [[\"logits\"], \"backbone.layer4\"], lr_decay = 2.6 }",
    );
    let fine_run = dir.join("fine").display().to_string();
    let o = graft(&["train", &fine, "--out", &fine_run, "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tuned = tensors(&dir.join("fine/model.safetensors"));
    assert_ne!(
        tuned["backbone.layer4.1.conv2.weight"],
        base_weights["layer4.1.conv2.weight"]
    );
    assert_eq!(
        tuned["backbone.layer1.0.conv1.weight"],
        base_weights["layer1.0.conv1.weight"]
    );
    // A frozen batch norm keeps its statistics through training.
    assert_eq!(
        tuned["backbone.layer1.0.bn1.running_var"],
        base_weights["layer1.0.bn1.running_var"]
    );

    // transfer = "auto" on a backbone measures the images against the batch norms' stored statistics (ResNet-18
    // has 20), and with 8 training images per class chooses frozen features; a named strategy fine-tunes blocks
    // named as PyTorch names them.
    let auto = experiment(
        &dir,
        "auto.toml",
        ", size = [32, 32]",
        &format!("{backbone}\n{head}"),
        "transfer = \"auto\"",
    );
    let o = graft(&["train", &auto, "--out", "unused", "--plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["strategy"], "features", "{plan}");
    assert_eq!(plan["pretrained"], "resnet18");
    assert_eq!(plan["evidence"]["smallest_class"], 8);
    let measured = plan["evidence"]["shift_measured_on"].as_str().unwrap();
    assert!(
        measured.contains("24 training images at the inputs of 20 batch-norm layers"),
        "{measured}"
    );
    assert!(plan["evidence"]["domain_shift"].as_f64().unwrap() > 0.0, "{plan}");
    let top = experiment(
        &dir,
        "top.toml",
        ", size = [32, 32]",
        &format!("{backbone}\n{head}"),
        "transfer = \"fine_tune_top\"",
    );
    let o = graft(&["train", &top, "--out", "unused", "--plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        plan["recipe"]["layer_groups"],
        serde_json::json!([["logits"], ["backbone.layer4.1"], ["backbone.layer4.0"]])
    );

    // Mistakes. Grey images read as grey, for RGB weights:
    for (class, shade) in [("dark", 40u8), ("light", 200u8)] {
        std::fs::create_dir_all(dir.join("grey").join(class)).unwrap();
        for i in 0..4u8 {
            image::GrayImage::from_pixel(16, 16, image::Luma([shade + i]))
                .save(dir.join("grey").join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let grey = write(
        &dir,
        "grey.toml",
        &format!(
            "[data]\ndataset = {{ images = {{ path = \"{}\", size = [32, 32], channels = 1 }} }}\n\
             split = {{ validation = 0.25 }}\n[model]\nlayers = [\n{backbone}\n{head}\n]\n[train]\nepochs = 1\n\
             loss = \"sparse_categorical_crossentropy\"\n",
            dir.join("grey").display()
        ),
    );
    let err = expect_error(graft(&[
        "train",
        &grey,
        "--out",
        &dir.join("grey-run").display().to_string(),
    ]));
    assert!(
        err.contains("data.dataset.images.channels: resnet18 takes RGB images [3, H, W], but channels = 1"),
        "{err}"
    );
    // Weights of another architecture:
    let other = experiment(
        &dir,
        "other.toml",
        ", size = [32, 32]",
        &format!(r#"{{ name = "backbone", efficientnet_lite0 = {{ pretrained = "{pretrained}" }} }}, {head}"#),
        "epochs = 1",
    );
    let err = expect_error(graft(&[
        "train",
        &other,
        "--out",
        &dir.join("other").display().to_string(),
    ]));
    assert!(
        err.contains("the weights are not those of efficientnet_lite0") && err.contains("missing"),
        "{err}"
    );
    // A weights path that is not there:
    let missing = experiment(
        &dir,
        "missing.toml",
        ", size = [32, 32]",
        &format!(
            r#"{{ resnet18 = {{ pretrained = "{}" }} }}, {head}"#,
            dir.join("nope").display()
        ),
        "epochs = 1",
    );
    let err = expect_error(graft(&[
        "train",
        &missing,
        "--out",
        &dir.join("m").display().to_string(),
    ]));
    assert!(
        err.contains("nope") && err.contains("no such file or directory"),
        "{err}"
    );
    // A misspelt architecture is suggested:
    let typo = experiment(&dir, "typo.toml", "", "{ resnet81 = {} },", "epochs = 1");
    let err = expect_error(graft(&["train", &typo, "--out", &dir.join("t").display().to_string()]));
    assert!(
        err.contains("unknown layer `resnet81`") && err.contains("resnet18"),
        "{err}"
    );
}
