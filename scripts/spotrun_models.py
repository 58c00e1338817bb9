"""PyTorch twins of spotrun's built-in models: their state_dict names equal spotrun's tensor names.

    import torch, safetensors.torch
    from spotrun_models import SpotrunMLP
    model = SpotrunMLP(784, [1024, 1024], 10)
    model.load_state_dict(safetensors.torch.load_file("runs/default-xxxxxxxx/model.safetensors"))

SpotrunGPT re-implements nanoGPT's `GPT` (karpathy/nanoGPT, model.py) with the same `state_dict` names, so a
nanoGPT checkpoint's `model` dict loads into it and vice versa (the causal mask is not a buffer here: attention
always takes the `scaled_dot_product_attention(..., is_causal=True)` path).
"""
import math

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


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nanoGPT's): parameters `weight` and, only if `bias`, `bias`; eps 1e-5."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one fused q/k/v projection `c_attn`, SDPA, output projection `c_proj`."""

    def __init__(self, n_embd, n_head, dropout, bias):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head = n_head
        self.n_embd = n_embd
        self.dropout = dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """c_fc (n_embd -> 4 n_embd), exact GELU, c_proj (4 n_embd -> n_embd), dropout."""

    def __init__(self, n_embd, dropout, bias):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU(approximate="none")
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, n_embd, n_head, dropout, bias):
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = LayerNorm(n_embd, bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class SpotrunGPT(nn.Module):
    """nanoGPT's GPT: token + position embeddings, n_layer blocks, final LayerNorm, lm_head tied to wte.

    Modules are created in nanoGPT's order and initialised as nanoGPT does, so under the same seed the initial
    weights equal nanoGPT's. `forward(idx)` returns logits for every position, `[B, T, vocab_size]`.
    """

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, dropout=0.0, bias=False):
        super().__init__()
        self.vocab_size, self.block_size, self.n_layer = vocab_size, block_size, n_layer
        self.n_head, self.n_embd, self.dropout, self.bias = n_head, n_embd, dropout, bias
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer)),
            ln_f=LayerNorm(n_embd, bias),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        # Weight tying: one Parameter under two state_dict names (transformer.wte.weight and lm_head.weight);
        # parameters() / named_parameters() yield it once, as transformer.wte.weight.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding=True):
        """Parameter count, the tied weight once; like nanoGPT, position embeddings excluded by default."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx):
        b, t = idx.size()
        if t > self.block_size:
            raise ValueError(f"cannot forward a sequence of length {t}: block size is only {self.block_size}")
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """nanoGPT's AdamW: weight decay on tensors with dim >= 2 only; fused on CUDA."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        extra = dict(fused=True) if device_type == "cuda" else dict()
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Extends idx [B, T] by max_new_tokens sampled tokens (call model.eval() first), as nanoGPT does."""
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.block_size else idx[:, -self.block_size:]
            logits = self(idx_cond)[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits, dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
        return idx


def from_config(model_cfg, sample_shape, classes):
    """Builds the twin of a spotrun [model] section (as written to RUN_DIR/config.toml).

    For kind "gpt" the dict must hold `vocab_size` (callers add it; sample_shape and classes are unused).
    """
    kind = model_cfg.get("kind", "mlp")
    if kind == "gpt":
        if "vocab_size" not in model_cfg:
            raise ValueError("from_config: a gpt model needs model_cfg['vocab_size']")
        return SpotrunGPT(
            int(model_cfg["vocab_size"]),
            int(model_cfg.get("block_size", 256)),
            int(model_cfg.get("n_layer", 6)),
            int(model_cfg.get("n_head", 6)),
            int(model_cfg.get("n_embd", 384)),
            float(model_cfg.get("dropout", 0.0)),
            bool(model_cfg.get("bias", False)),
        )
    hidden = model_cfg.get("hidden", [1024, 1024])
    act = model_cfg.get("activation", "relu")
    drop = model_cfg.get("dropout", 0.0)
    if kind == "cnn":
        return SpotrunCNN(sample_shape, model_cfg.get("channels", [32, 64]), hidden, classes, act, drop)
    n = 1
    for d in sample_shape:
        n *= d
    return SpotrunMLP(n, hidden, classes, act, drop)
