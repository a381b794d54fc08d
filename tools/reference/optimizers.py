"""Reference parameters for crates/graft/src/train/optim.rs: 5 steps of each torch.optim optimizer on
loss = sum(c * w**2 + w) from w0 = [0.5, -1.0, 2.0], c = [1, 2, 3]."""
import torch

cases = {
    "sgd": (torch.optim.SGD, dict(lr=0.1)),
    "sgd_momentum_nesterov_wd": (torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "adagrad": (torch.optim.Adagrad, dict(lr=0.1)),
    "adadelta": (torch.optim.Adadelta, dict(lr=1.0)),
    "rmsprop": (torch.optim.RMSprop, dict(lr=0.01)),
    "rmsprop_centered": (torch.optim.RMSprop, dict(lr=0.01, centered=True)),
    "adam": (torch.optim.Adam, dict(lr=0.1)),
    "adam_amsgrad": (torch.optim.Adam, dict(lr=0.1, amsgrad=True)),
    "adamw": (torch.optim.AdamW, dict(lr=0.1)),
    "nadam": (torch.optim.NAdam, dict(lr=0.1)),
}
c = torch.tensor([1.0, 2.0, 3.0])
for name, (cls, kw) in cases.items():
    w = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    opt = cls([w], **kw)
    for _ in range(5):
        opt.zero_grad()
        (c * w**2 + w).sum().backward()
        opt.step()
    print(name, [round(v, 7) for v in w.tolist()])
