"""Writes crates/graft/tests/fixtures/io/mlp.pt: a torch.save'd state dict of Linear(4,3) -> Linear(3,2) whose
values are 0.1 * arange (the Rust test in model/io.rs checks names, shapes and values)."""
import torch

sd = {
    "fc1.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.1,
    "fc1.bias": torch.arange(3, dtype=torch.float32) * 0.1,
    "fc2.weight": torch.arange(6, dtype=torch.float64).reshape(2, 3) * 0.1,
    "fc2.bias": torch.arange(2, dtype=torch.float32) * 0.1,
}
torch.save(sd, "crates/graft/tests/fixtures/io/mlp.pt")
