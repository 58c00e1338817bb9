"""PyTorch twins of spotrun's built-in models: their state_dict names equal spotrun's tensor names.

    import torch, safetensors.torch
    from spotrun_models import SpotrunMLP
    model = SpotrunMLP(784, [1024, 1024], 10)
    model.load_state_dict(safetensors.torch.load_file("runs/default-xxxxxxxx/model.safetensors"))
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class SpotrunMLP(nn.Module):
    def __init__(self, inputs, hidden, classes, activation="relu", dropout=0.0):
        super().__init__()
        sizes = [inputs, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.head = nn.Linear(sizes[-1], classes)
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers:
            x = self.drop(self.act(layer(x)))
        return self.head(x)


class SpotrunCNN(nn.Module):
    def __init__(self, shape, channels, hidden, classes, activation="relu", dropout=0.0):
        super().__init__()
        c, h, w = shape
        self.shape = tuple(shape)
        self.convs = nn.ModuleList()
        for out in channels:
            self.convs.append(nn.Conv2d(c, out, 3, padding=1))
            c, h, w = out, h // 2, w // 2
        self.act = ACTIVATIONS[activation]()
        self.mlp = SpotrunMLP(c * h * w, hidden, classes, activation, dropout)

    def forward(self, x):
        x = x.reshape(-1, *self.shape)
        for conv in self.convs:
            x = F.max_pool2d(self.act(conv(x)), 2)
        return self.mlp(x)


def from_config(model_cfg, sample_shape, classes):
    """Builds the twin of a spotrun [model] section (as written to RUN_DIR/config.toml)."""
    kind = model_cfg.get("kind", "mlp")
    hidden = model_cfg.get("hidden", [1024, 1024])
    act = model_cfg.get("activation", "relu")
    drop = model_cfg.get("dropout", 0.0)
    if kind == "cnn":
        return SpotrunCNN(sample_shape, model_cfg.get("channels", [32, 64]), hidden, classes, act, drop)
    n = 1
    for d in sample_shape:
        n *= d
    return SpotrunMLP(n, hidden, classes, act, drop)
