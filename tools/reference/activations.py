"""Reference values for crates/graft/src/layers/activation.rs: PyTorch's activation definitions in float64."""
import math

x = [-2.0, -0.5, 0.0, 1.5]
softplus = lambda v: math.log1p(math.exp(v))
alpha, scale = 1.6732632423543772, 1.0507009873554805  # torch.nn.SELU constants
print("elu", [v if v > 0 else math.exp(v) - 1 for v in x])
print("selu", [scale * (v if v > 0 else alpha * (math.exp(v) - 1)) for v in x])
print("gelu", [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
print("mish", [v * math.tanh(softplus(v)) for v in x])
print("tanh", [math.tanh(v) for v in x])
print("sigmoid", [1 / (1 + math.exp(-v)) for v in x])
e = [math.exp(v) for v in [1, 2, 3, 4]]
print("softmax", [v / sum(e) for v in e])
