"""PyTorch reference outputs of the pretrained-CNN backbones, for crates/graft/tests/numerics/backbones.rs.

Run from the repository root, in the reference virtual environment plus the two model packages:

    .venv/bin/pip install -r tools/reference/requirements.txt torchvision efficientnet_lite_pytorch==0.1.0
    .venv/bin/python tools/reference/backbones.py

Writes crates/graft/tests/fixtures/backbones/<case>.json. The full models hold 4.7 M (EfficientNet-Lite0) and
11.7 M (ResNet-18) values, too many to commit, so the random-weight cases fill every tensor from a formula that the
Rust test computes too (`formula_weights`): tensor t of the state dict (in its order, step counters left out),
element i, u = sin(0.731·i + 1.37·t + 0.11) rounded to float32, then

* `running_var`: 0.5 + 0.25·(u + 1); `running_mean`: 0.1·u;
* other 1-D tensors: batch-norm `weight` 1 + 0.2·u, biases 0.1·u;
* kernels: u·√(4 / fan_in) (sin's variance is 1/2, so this is He's variance 2 / fan_in).

Each fixture holds the keys with their shapes (so the Rust side fills the same tensors), the image side and the seed
of the two input images (also a formula, see `images`), the pooled features and the logits, computed in float64 in
eval mode.

With the ImageNet EfficientNet-Lite0 file present (scripts/fetch-data.sh efficientnet-lite0), it also writes
`efficientnet_lite0_imagenet.json`: the real weights' outputs on two 96×96 inputs, which the Rust test compares when
the same file is present (as the MiniLM golden test does).
"""

import json
import math
import os
import sys

import numpy as np
import torch

OUT = "crates/graft/tests/fixtures/backbones"
IMAGENET = "data/efficientnet-lite0/efficientnet-lite0-57934424.pth"


def formula_weights(model):
    state = {}
    t = 0
    for key, tensor in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = tensor
            continue
        n = tensor.numel()
        i = np.arange(n, dtype=np.float64)
        u = np.sin(0.731 * i + 1.37 * t + 0.11).astype(np.float32).astype(np.float64)
        if key.endswith("running_var"):
            v = 0.5 + 0.25 * (u + 1.0)
        elif key.endswith("running_mean"):
            v = 0.1 * u
        elif tensor.dim() == 1 and key.endswith("weight"):
            v = 1.0 + 0.2 * u
        elif tensor.dim() == 1:
            v = 0.1 * u
        else:
            fan_in = n // tensor.shape[0]
            v = u * math.sqrt(4.0 / fan_in)
        v = v.astype(np.float32).astype(np.float64)
        state[key] = torch.from_numpy(v.reshape(tuple(tensor.shape)))
        t += 1
    return state


def images(side, seed):
    """Two images from a formula the Rust test repeats: element i of the flat [2, 3, side, side] tensor is
    1.5·sin(0.377·i + seed), rounded to float32."""
    i = np.arange(2 * 3 * side * side, dtype=np.float64)
    x = (1.5 * np.sin(0.377 * i + seed)).astype(np.float32).astype(np.float64)
    return torch.from_numpy(x.reshape(2, 3, side, side))


def efficientnet(side):
    from efficientnet_lite_pytorch import EfficientNet

    # image_size sets the static "same" padding; at the input's own size it is TensorFlow's dynamic padding.
    return EfficientNet.from_name("efficientnet-lite0", image_size=side)


def efficientnet_features(model, x):
    x = model._swish(model._bn0(model._conv_stem(x)))
    for block in model._blocks:
        x = block(x)
    x = model._swish(model._bn1(model._conv_head(x)))
    return model._avg_pooling(x).flatten(1)


def resnet18(_side):
    from torchvision.models import resnet18

    return resnet18()


def resnet_features(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return model.avgpool(x).flatten(1)


def write(name, model, features_of, side, seed, note):
    model = model.double().eval()
    x = images(side, seed)
    with torch.no_grad():
        features = features_of(model, x)
        logits = model(x)
    keys = [[k, list(v.shape)] for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    os.makedirs(OUT, exist_ok=True)
    with open(f"{OUT}/{name}.json", "w") as f:
        json.dump(
            {
                "note": note,
                "side": side,
                "seed": seed,
                "keys": keys,
                "features": features.flatten().tolist(),
                "logits": logits.flatten().tolist(),
            },
            f,
        )
    print(f"{name}: |logits| max {logits.abs().max().item():.3f}, |features| max {features.abs().max().item():.3f}")


def main():
    torch.set_default_dtype(torch.float64)
    for name, build, features_of, side in [
        ("efficientnet_lite0", efficientnet, efficientnet_features, 64),
        ("resnet18", resnet18, resnet_features, 64),
    ]:
        model = build(side)
        model.load_state_dict(formula_weights(model))
        write(name, model, features_of, side, 7, f"{name}, formula weights, two {side}x{side} images")
    if os.path.exists(IMAGENET):
        model = efficientnet(96)
        model.load_state_dict(torch.load(IMAGENET, map_location="cpu"))
        write(
            "efficientnet_lite0_imagenet",
            model,
            efficientnet_features,
            96,
            8,
            "EfficientNet-Lite0 with its ImageNet weights, two 96x96 images",
        )
    else:
        print(f"{IMAGENET} not found: the ImageNet fixture is left as it is", file=sys.stderr)


if __name__ == "__main__":
    main()
