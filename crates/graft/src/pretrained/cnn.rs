//! Pretrained CNN weights (a PyTorch state dict: `.pth`/`.pt`/`.bin` in `torch.save`'s formats, or
//! `.safetensors`) loaded into the nodes a backbone entry expanded into ([`crate::model::backbone`]), by their
//! PyTorch keys. The load is strict over the backbone: every parameter and batch-norm statistic must be in the file
//! with its shape, and every tensor of the file used, except the step counters (`num_batches_tracked`) and, for
//! `output = "features"`, the ImageNet classifier.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Graph;
use crate::model::backbone::{Backbone, BackboneOutput};
use crate::model::io::{NamedTensor, load_named_where, read_state_dict};

const EXTENSIONS: [&str; 4] = ["pth", "pt", "bin", "safetensors"];

/// `path` itself, or the one state-dict file in the directory `path`.
pub fn weights_file(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(Error::new(
            "no such file or directory; `pretrained` names a PyTorch state dict (.pth, .pt, .bin, .safetensors) \
             or a directory holding one (scripts/fetch-data.sh efficientnet-lite0 gives data/efficientnet-lite0)",
        )
        .in_file(path)
        .at("pretrained"));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::new(format!("cannot list the directory: {e}")).in_file(path))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e))
        })
        .collect();
    found.sort();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::new("holds no state dict (.pth, .pt, .bin or .safetensors)").in_file(path)),
        many => Err(Error::new(format!(
            "holds {} state dicts ({}); name the file itself in `pretrained`",
            many.len(),
            many.iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .in_file(path)),
    }
}

/// Loads `tensors` (PyTorch keys) into the nodes of `backbone`, strictly (see the module documentation).
pub fn load_backbone(
    model: Graph,
    backbone: &Backbone,
    tensors: &HashMap<String, NamedTensor>,
    file: &Path,
) -> Result<Graph> {
    let arch = backbone.architecture;
    // The stem's input channels: ImageNet weights take RGB; a grayscale source says so before the shapes do.
    let stem = &backbone.nodes[0];
    let input_shape = model
        .nodes
        .iter()
        .find(|n| &n.name == stem)
        .and_then(|n| n.sources.first())
        .map(|s| model.source_shape(*s));
    if let Some(channels) = input_shape.as_ref().and_then(|s| s.first())
        && *channels != 3
    {
        return Err(Error::new(format!(
            "{} takes RGB images [3, H, W] but its input has {channels} channel(s); read the images with \
             channels = 3 (grayscale is repeated into the three channels)",
            arch.kind()
        ))
        .at(format!("layer '{stem}'")));
    }
    let prefix = backbone.prefix.as_str();
    let owned = |name: &str| {
        backbone
            .nodes
            .iter()
            .any(|n| name.strip_prefix(n.as_str()).is_some_and(|rest| rest.starts_with('.')))
    };
    let classifier = arch.classifier();
    let features = backbone.config.output == BackboneOutput::Features;
    load_named_where(
        model,
        owned,
        tensors,
        |path| {
            let name = path.join(".");
            name.strip_prefix(prefix).map(str::to_string).unwrap_or(name)
        },
        |key| key.ends_with(".num_batches_tracked") || (features && key.starts_with(classifier)),
        "model",
    )
    .map_err(|problems| {
        Error::new(format!(
            "the weights are not those of {} — {}",
            arch.kind(),
            problems.describe()
        ))
        .in_file(file)
    })
}

/// Loads the weights of every backbone that names `pretrained` (already resolved against the experiment file).
pub fn load_pretrained_backbones(mut model: Graph, backbones: &[Backbone], quiet: bool) -> Result<Graph> {
    for backbone in backbones {
        let Some(path) = &backbone.config.pretrained else {
            continue;
        };
        let file = weights_file(path)?;
        let tensors = read_state_dict(&file)?;
        model = load_backbone(model, backbone, &tensors, &file)?;
        if !quiet {
            eprintln!("{}: weights from {}", backbone.architecture.kind(), file.display());
        }
    }
    Ok(model)
}
