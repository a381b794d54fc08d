//! The pretrained-CNN backbones against their PyTorch definitions (`tools/reference/backbones.py`):
//! EfficientNet-Lite0 (`efficientnet_lite_pytorch`) and ResNet-18 (torchvision) with every tensor filled from a
//! formula both sides compute, and EfficientNet-Lite0 with its ImageNet weights when
//! `data/efficientnet-lite0` is present (`scripts/fetch-data.sh efficientnet-lite0`). The weights go through the
//! same strict loader as a real checkpoint, so a misnamed or misshaped node fails here too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use serde::Deserialize;

use graft::layers::Ctx;
use graft::layers::value::Data;
use graft::model::graph::Graph;
use graft::model::io::{NamedTensor, read_state_dict};
use graft::model::spec::ModelSpec;
use graft::pretrained::cnn::load_backbone;

#[derive(Deserialize)]
struct Fixture {
    side: usize,
    seed: f64,
    keys: Vec<(String, Vec<usize>)>,
    features: Vec<f64>,
    logits: Vec<f64>,
}

fn fixture(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/backbones/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The reference script's `formula_weights`, tensor by tensor in the state dict's order.
fn formula_weights(keys: &[(String, Vec<usize>)]) -> HashMap<String, NamedTensor> {
    keys.iter()
        .enumerate()
        .map(|(t, (key, shape))| {
            let n: usize = shape.iter().product();
            let values = (0..n)
                .map(|i| {
                    let u = (0.731 * i as f64 + 1.37 * t as f64 + 0.11).sin() as f32 as f64;
                    let v = if key.ends_with("running_var") {
                        0.5 + 0.25 * (u + 1.0)
                    } else if key.ends_with("running_mean") {
                        0.1 * u
                    } else if shape.len() == 1 && key.ends_with("weight") {
                        1.0 + 0.2 * u
                    } else if shape.len() == 1 {
                        0.1 * u
                    } else {
                        u * (4.0 / (n / shape[0]) as f64).sqrt()
                    };
                    v as f32
                })
                .collect();
            let tensor = NamedTensor {
                name: key.clone(),
                shape: shape.clone(),
                values,
            };
            (key.clone(), tensor)
        })
        .collect()
}

fn images(side: usize, seed: f64) -> Data {
    let n = 2 * 3 * side * side;
    let values: Vec<f32> = (0..n).map(|i| (1.5 * (0.377 * i as f64 + seed).sin()) as f32).collect();
    Data::D4(Tensor::<4>::from_data(
        TensorData::new(values, [2, 3, side, side]),
        &Device::default(),
    ))
}

/// The model `{ kind = { output = "logits" } }` on `[3, side, side]`, with `tensors` loaded by the backbone loader.
fn model(kind: &str, side: usize, tensors: &HashMap<String, NamedTensor>) -> Graph {
    let text = format!("input = [3, {side}, {side}]\nlayers = [{{ {kind} = {{ output = \"logits\" }} }}]");
    let spec = ModelSpec::from_toml(&toml::from_str(&text).unwrap(), "model").unwrap();
    let graph = Graph::build(&spec, &Device::default()).unwrap();
    load_backbone(graph, &spec.backbones[0], tensors, &PathBuf::from("formula")).unwrap()
}

fn values(data: Data) -> Vec<f64> {
    let t = match data {
        Data::D2(t) => t,
        _ => panic!("expected [B, F]"),
    };
    t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

/// The largest |graft − PyTorch|, relative to the largest |PyTorch| value.
fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0f64, |m, (g, w)| m.max((g - w).abs())) / scale
}

fn check(kind: &str, pool: &str, f: &Fixture, tensors: &HashMap<String, NamedTensor>) {
    let graph = model(kind, f.side, tensors);
    let x = images(f.side, f.seed);
    let logits = graph.forward(vec![x.clone()], false, false).unwrap().remove(0).data;
    let features = graph
        .forward_until(vec![x], graph.node_index(pool).unwrap(), Ctx::default())
        .unwrap()
        .data;
    let (e_logits, e_features) = (
        relative_error(&values(logits), &f.logits),
        relative_error(&values(features), &f.features),
    );
    println!("{kind}: relative error logits {e_logits:.2e}, features {e_features:.2e}");
    // float32 through 20-odd layers against float64: measured about 1e-6.
    assert!(
        e_logits < 1e-4 && e_features < 1e-4,
        "{kind}: {e_logits:e} {e_features:e}"
    );
}

#[test]
fn efficientnet_lite0_matches_pytorch() {
    let f = fixture("efficientnet_lite0");
    check("efficientnet_lite0", "_avg_pooling", &f, &formula_weights(&f.keys));
}

#[test]
fn resnet18_matches_torchvision() {
    let f = fixture("resnet18");
    check("resnet18", "avgpool", &f, &formula_weights(&f.keys));
}

#[test]
fn efficientnet_lite0_imagenet_weights_match_pytorch() {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/efficientnet-lite0/efficientnet-lite0-57934424.pth");
    if !file.is_file() {
        println!(
            "skipped: {} is absent (run scripts/fetch-data.sh efficientnet-lite0)",
            file.display()
        );
        return;
    }
    let f = fixture("efficientnet_lite0_imagenet");
    check(
        "efficientnet_lite0",
        "_avg_pooling",
        &f,
        &read_state_dict(&file).unwrap(),
    );
}
