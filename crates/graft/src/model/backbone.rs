//! Pretrained-CNN architectures as model entries: `{ efficientnet_lite0 = { ... } }` and `{ resnet18 = { ... } }`
//! expand, when the spec is read, into the graft nodes of their PyTorch definitions (conv2d, batch_norm,
//! activations, add, pooling, dense), each named by its PyTorch state-dict key (`_blocks.3._depthwise_conv`,
//! `layer2.0.downsample.0`). A PyTorch checkpoint therefore loads by name, and everything that works on nodes and
//! parameter names — `summary`, `freeze` globs, layer groups, gradual unfreezing, `init_from`, ONNX export —
//! works on the backbone as it is. A named entry prefixes its nodes (`backbone._conv_stem`) and ends in a node of
//! that name, so other nodes can take `from = "backbone"`.
//!
//! - EfficientNet-Lite0 as in `efficientnet_lite_pytorch` (lukemelas naming): stem 3×3/2 (32) + BN + ReLU6,
//!   16 MBConv blocks (expand 1×1, depthwise k×k, project 1×1, no squeeze-excitation, skip when the stride is 1 and
//!   the channels stay), head 1×1 (1280) + BN + ReLU6, average pool, dropout 0.2, linear 1000. TensorFlow "same"
//!   padding (the extra row/column at the end), batch norm eps 1e-3 and momentum 0.01, no convolution biases.
//!   Drop-connect (stochastic depth) in training is not reproduced; inference is identical.
//! - ResNet-18 as in torchvision: conv 7×7/2 (64) + BN + ReLU, max pool 3×3/2, four stages of two basic blocks
//!   (64, 128, 256, 512; the first block of stages 2–4 strides 2 and projects the shortcut with `downsample`),
//!   average pool, linear 1000. Batch norm eps 1e-5, momentum 0.1.
//!
//! `output = "features"` (the default) ends at the pooled vector (1280 or 512 values), for a head of one's own;
//! `"logits"` keeps the ImageNet classifier. Both take RGB images `[3, H, W]`, nominally 224×224 (any size from 32
//! works), normalized as [`Architecture::normalization`] says; an `images` data source without its own `size`,
//! `channels` or `normalize` gets these.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::image_source::{IMAGENET_MEAN, IMAGENET_STD};
use crate::layers::LayerSpec;
use crate::layers::activation::NoOptions;
use crate::layers::conv::{ConvConfig, Dims, Padding};
use crate::layers::dense::DenseConfig;
use crate::layers::dropout::DropoutConfig;
use crate::layers::init::Initializer;
use crate::layers::norm::BatchNormConfig;
use crate::layers::pool::PoolConfig;
use crate::model::spec::{NodeOp, NodeSpec};

/// The model-entry keys of the architectures.
pub const BACKBONE_KINDS: [&str; 2] = ["efficientnet_lite0", "resnet18"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    EfficientnetLite0,
    Resnet18,
}

/// Where the backbone stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackboneOutput {
    /// The globally average-pooled vector.
    #[default]
    Features,
    /// The ImageNet classifier's 1000 logits.
    Logits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BackboneConfig {
    /// A PyTorch state dict (`.pth`, `.pt`, `.bin` or `.safetensors`), or a directory holding exactly one, whose
    /// weights the backbone starts from; loaded when an experiment starts. Without it the backbone trains from
    /// scratch (He-initialized convolutions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    #[serde(default)]
    pub output: BackboneOutput,
}

/// A backbone placed in a model: what it is, where its weights come from, and the nodes it expanded into.
#[derive(Debug, Clone, PartialEq)]
pub struct Backbone {
    pub architecture: Architecture,
    pub config: BackboneConfig,
    /// The node-name prefix (`""` or `"name."`) in front of every PyTorch key.
    pub prefix: String,
    pub nodes: Vec<String>,
}

impl Architecture {
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "efficientnet_lite0" => Some(Architecture::EfficientnetLite0),
            "resnet18" => Some(Architecture::Resnet18),
            _ => None,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Architecture::EfficientnetLite0 => "efficientnet_lite0",
            Architecture::Resnet18 => "resnet18",
        }
    }

    /// The image side the ImageNet weights were trained at.
    pub fn image_size(self) -> usize {
        224
    }

    /// The per-channel (mean, std) that 0–1 RGB values are normalized with. EfficientNet-Lite was trained on
    /// TF-Lite's (x − 127)/128, i.e. mean and std 0.5: on scikit-image's `chelsea.png` and `coffee.png` its
    /// top-1 (Egyptian cat 0.396, espresso 0.945) is more confident than with ImageNet statistics (0.385, 0.838).
    pub fn normalization(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Architecture::EfficientnetLite0 => ([0.5; 3], [0.5; 3]),
            Architecture::Resnet18 => (IMAGENET_MEAN, IMAGENET_STD),
        }
    }

    /// The checkpoint keys of the ImageNet classifier, which `output = "features"` leaves unused.
    pub fn classifier(self) -> &'static str {
        match self {
            Architecture::EfficientnetLite0 => "_fc.",
            Architecture::Resnet18 => "fc.",
        }
    }

    /// The nodes of this architecture fed by `input`, names prefixed by `prefix`; the last one is the output.
    pub fn expand(self, prefix: &str, input: &str, output: BackboneOutput) -> Vec<NodeSpec> {
        let mut b = Builder {
            prefix: prefix.to_string(),
            nodes: vec![],
        };
        match self {
            Architecture::EfficientnetLite0 => efficientnet_lite0(&mut b, input, output),
            Architecture::Resnet18 => resnet18(&mut b, input, output),
        }
        b.nodes
    }
}

struct Builder {
    prefix: String,
    nodes: Vec<NodeSpec>,
}

impl Builder {
    /// Adds node `prefix + name` fed by `from` (full names) and returns its full name.
    fn add(&mut self, name: &str, layer: LayerSpec, from: &[&str]) -> String {
        let full = format!("{}{name}", self.prefix);
        self.nodes.push(NodeSpec {
            name: full.clone(),
            op: NodeOp::Layer(layer),
            inputs: from.iter().map(|s| s.to_string()).collect(),
        });
        full
    }
}

fn conv(filters: usize, kernel: usize, stride: usize, padding: Padding, groups: usize) -> LayerSpec {
    let mut c = ConvConfig::new(filters, kernel);
    c.stride = Dims::One(stride);
    c.padding = padding;
    c.groups = groups;
    c.use_bias = false;
    c.kernel_initializer = Initializer::HeNormal;
    LayerSpec::Conv2d(c)
}

fn same() -> Padding {
    Padding::Named("same".into())
}

fn batch_norm(momentum: f64, epsilon: f64) -> LayerSpec {
    LayerSpec::BatchNorm(BatchNormConfig { momentum, epsilon })
}

fn relu6() -> LayerSpec {
    LayerSpec::Relu6(NoOptions {})
}

/// `(repeats, kernel, stride, expand ratio, output channels)` of each EfficientNet-Lite0 stage.
const LITE0_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

fn efficientnet_lite0(b: &mut Builder, input: &str, output: BackboneOutput) {
    let bn = || batch_norm(0.01, 1e-3);
    let mut x = b.add("_conv_stem", conv(32, 3, 2, same(), 1), &[input]);
    x = b.add("_bn0", bn(), &[&x]);
    x = b.add("_stem_act", relu6(), &[&x]);
    let mut channels = 32;
    let mut index = 0;
    for (repeats, kernel, first_stride, expand, out) in LITE0_STAGES {
        for r in 0..repeats {
            let stride = if r == 0 { first_stride } else { 1 };
            let block = format!("_blocks.{index}.");
            let inner = channels * expand;
            let block_input = x.clone();
            if expand != 1 {
                x = b.add(&format!("{block}_expand_conv"), conv(inner, 1, 1, same(), 1), &[&x]);
                x = b.add(&format!("{block}_bn0"), bn(), &[&x]);
                x = b.add(&format!("{block}_expand_act"), relu6(), &[&x]);
            }
            x = b.add(
                &format!("{block}_depthwise_conv"),
                conv(inner, kernel, stride, same(), inner),
                &[&x],
            );
            x = b.add(&format!("{block}_bn1"), bn(), &[&x]);
            x = b.add(&format!("{block}_depthwise_act"), relu6(), &[&x]);
            x = b.add(&format!("{block}_project_conv"), conv(out, 1, 1, same(), 1), &[&x]);
            x = b.add(&format!("{block}_bn2"), bn(), &[&x]);
            if stride == 1 && channels == out {
                x = b.add(
                    &format!("{block}skip"),
                    LayerSpec::Add(NoOptions {}),
                    &[&x, &block_input],
                );
            }
            channels = out;
            index += 1;
        }
    }
    x = b.add("_conv_head", conv(1280, 1, 1, same(), 1), &[&x]);
    x = b.add("_bn1", bn(), &[&x]);
    x = b.add("_head_act", relu6(), &[&x]);
    x = b.add("_avg_pooling", LayerSpec::GlobalAvgPool2d(NoOptions {}), &[&x]);
    if output == BackboneOutput::Logits {
        x = b.add("_dropout", LayerSpec::Dropout(DropoutConfig { rate: 0.2 }), &[&x]);
        b.add("_fc", LayerSpec::Dense(DenseConfig::new(1000)), &[&x]);
    }
}

fn resnet18(b: &mut Builder, input: &str, output: BackboneOutput) {
    let bn = || batch_norm(0.1, 1e-5);
    let pad = |p: usize| Padding::Explicit(Dims::One(p));
    let relu = || LayerSpec::Relu(NoOptions {});
    let mut x = b.add("conv1", conv(64, 7, 2, pad(3), 1), &[input]);
    x = b.add("bn1", bn(), &[&x]);
    x = b.add("relu", relu(), &[&x]);
    let mut pool = PoolConfig::new(3);
    pool.stride = Some(Dims::One(2));
    pool.padding = pad(1);
    x = b.add("maxpool", LayerSpec::MaxPool2d(pool), &[&x]);
    let mut channels = 64;
    for (stage, width) in [64, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let name = format!("layer{}.{block}.", stage + 1);
            let block_input = x.clone();
            x = b.add(&format!("{name}conv1"), conv(width, 3, stride, pad(1), 1), &[&x]);
            x = b.add(&format!("{name}bn1"), bn(), &[&x]);
            x = b.add(&format!("{name}relu1"), relu(), &[&x]);
            x = b.add(&format!("{name}conv2"), conv(width, 3, 1, pad(1), 1), &[&x]);
            x = b.add(&format!("{name}bn2"), bn(), &[&x]);
            let shortcut = if stride != 1 || channels != width {
                let s = b.add(
                    &format!("{name}downsample.0"),
                    conv(width, 1, stride, pad(0), 1),
                    &[&block_input],
                );
                b.add(&format!("{name}downsample.1"), bn(), &[&s])
            } else {
                block_input
            };
            x = b.add(&format!("{name}add"), LayerSpec::Add(NoOptions {}), &[&x, &shortcut]);
            x = b.add(&format!("{name}relu2"), relu(), &[&x]);
            channels = width;
        }
    }
    x = b.add("avgpool", LayerSpec::GlobalAvgPool2d(NoOptions {}), &[&x]);
    if output == BackboneOutput::Logits {
        b.add("fc", LayerSpec::Dense(DenseConfig::new(1000)), &[&x]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Graph, ModelSpec};
    use burn::prelude::*;

    fn build(arch: Architecture, output: BackboneOutput, side: usize) -> Graph {
        let mut spec = ModelSpec::graph().input("image", vec![3, side, side]);
        spec.nodes = arch.expand("", "image", output);
        spec.outputs = vec![spec.nodes.last().unwrap().name.clone()];
        Graph::build(&spec, &Device::default()).unwrap()
    }

    fn count(graph: &Graph) -> usize {
        crate::model::params::parameters(graph).iter().map(|p| p.numel).sum()
    }

    #[test]
    fn parameter_counts_are_those_of_the_pytorch_models() {
        // efficientnet_lite_pytorch's EfficientNet-Lite0 and torchvision's resnet18(), counted in PyTorch
        assert_eq!(
            count(&build(Architecture::EfficientnetLite0, BackboneOutput::Logits, 32)),
            4_652_008
        );
        assert_eq!(
            count(&build(Architecture::Resnet18, BackboneOutput::Logits, 32)),
            11_689_512
        );
        assert_eq!(
            count(&build(Architecture::Resnet18, BackboneOutput::Features, 32)),
            11_689_512 - 513_000
        );
    }

    #[test]
    fn the_summary_counts_each_node_its_own_parameters() {
        let mut spec = ModelSpec::graph().input("image", vec![3, 32, 32]);
        spec = spec.backbone_node(
            Some("backbone"),
            Architecture::EfficientnetLite0,
            BackboneConfig::default(),
            "image",
        );
        spec.outputs = vec!["backbone".into()];
        let graph = Graph::build(&spec, &Device::default()).unwrap();
        let summary = graph.summary();
        let count = |name: &str| summary.rows.iter().find(|r| r.name == name).unwrap().trainable;
        assert_eq!(count("backbone._conv_stem"), 32 * 3 * 3 * 3);
        assert_eq!(count("backbone._blocks.15._depthwise_conv"), 1152 * 3 * 3);
        assert_eq!(count("backbone"), 0, "the output node owns nothing");
        assert_eq!(summary.trainable, 3_371_008);
    }

    #[test]
    fn names_are_the_pytorch_keys() {
        let graph = build(Architecture::Resnet18, BackboneOutput::Logits, 32);
        let names: Vec<String> = crate::model::params::parameters(&graph)
            .into_iter()
            .map(|p| p.name)
            .collect();
        for key in [
            "conv1.weight",
            "bn1.bias",
            "layer2.0.downsample.0.weight",
            "layer4.1.bn2.bias",
            "fc.weight",
        ] {
            assert!(names.iter().any(|n| n == key), "{key} in {names:?}");
        }
    }
}
