"""Reference values for crates/graft/src/train/loss.rs, from torch.nn.functional (run in a venv with torch)."""
import torch
import torch.nn.functional as F

x = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]])
y = torch.tensor([2, 1])
t = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
print("ce", F.cross_entropy(x, y).item())
print("ce_smooth_0.1", F.cross_entropy(x, y, label_smoothing=0.1).item())
w = torch.tensor([1.0, 2.0, 0.5])  # class weights; labels [2, 1] -> row weights [0.5, 2.0]
print("ce_weighted", F.cross_entropy(x, y, weight=w).item())
print("mse", F.mse_loss(x, t).item())
print("mae", F.l1_loss(x, t).item())
print("huber", F.huber_loss(x, t, delta=1.0).item())
print("bce", F.binary_cross_entropy_with_logits(x, t).item())
print("bce_pos_weight_3", F.binary_cross_entropy_with_logits(x, t, pos_weight=torch.tensor([3.0, 3.0, 3.0])).item())
soft = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0]])
print("ce_soft", F.cross_entropy(x, soft).item())
print("ce_soft_smooth_0.2", F.cross_entropy(x, soft, label_smoothing=0.2).item())
# SVM heads. Binary/multi-label hinge as Keras defines it (0/1 targets mapped to -1/+1), from torch ops; the
# multi-class hinge is torch's MultiMarginLoss (p=1, margin=1).
print("hinge", torch.clamp(1 - (2 * t - 1) * x, min=0).mean().item())
print("hinge_one_output", torch.clamp(1 - (2 * torch.tensor([[1.0], [0.0]]) - 1) * x[:, :1], min=0).mean().item())
print("multi_margin", F.multi_margin_loss(x, y).item())
