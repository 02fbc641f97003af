"""Writes a tiny random-weight GPT-2 in the legacy GGML format, and its numpy reference.

No model can be downloaded here, so the ctransformers backend is tested on a
model the test suite makes itself: 256 byte tokens plus <|endoftext|>, f32
weights, the tensor layout of ggml's gpt-2 example (``ne`` in ggml order: the
first dimension varies fastest). ``reference_logits`` runs the same network in
numpy, so a test can check the backend's numbers, not just "some text".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GGML_MAGIC = 0x67676D6C
EOT = b"<|endoftext|>"


@dataclass(frozen=True)
class TinyGPT2:
    path: Path
    weights: dict[str, np.ndarray]
    n_vocab: int
    n_ctx: int
    n_embd: int
    n_head: int
    n_layer: int


def write_tiny_gpt2(path: Path, *, n_ctx: int = 128, n_embd: int = 64, n_head: int = 4,
                    n_layer: int = 2, seed: int = 0) -> TinyGPT2:
    rng = np.random.default_rng(seed)
    n_vocab = 257
    w: dict[str, np.ndarray] = {}

    def mat(name: str, rows: int, cols: int, scale: float = 0.2) -> None:
        w[name] = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def vec(name: str, size: int, base: float = 0.0, scale: float = 0.05) -> None:
        w[name] = (base + rng.standard_normal(size) * scale).astype(np.float32)

    vec("model/ln_f/g", n_embd, 1.0)
    vec("model/ln_f/b", n_embd)
    mat("model/wte", n_vocab, n_embd, 0.5)
    mat("model/wpe", n_ctx, n_embd, 0.1)
    for i in range(n_layer):
        p = f"model/h{i}"
        vec(f"{p}/ln_1/g", n_embd, 1.0)
        vec(f"{p}/ln_1/b", n_embd)
        vec(f"{p}/ln_2/g", n_embd, 1.0)
        vec(f"{p}/ln_2/b", n_embd)
        mat(f"{p}/attn/c_attn/w", 3 * n_embd, n_embd)
        vec(f"{p}/attn/c_attn/b", 3 * n_embd)
        mat(f"{p}/attn/c_proj/w", n_embd, n_embd)
        vec(f"{p}/attn/c_proj/b", n_embd)
        mat(f"{p}/mlp/c_fc/w", 4 * n_embd, n_embd)
        vec(f"{p}/mlp/c_fc/b", 4 * n_embd)
        mat(f"{p}/mlp/c_proj/w", n_embd, 4 * n_embd)
        vec(f"{p}/mlp/c_proj/b", n_embd)
    with path.open("wb") as f:
        f.write(struct.pack("<I6i", GGML_MAGIC, n_vocab, n_ctx, n_embd, n_head, n_layer, 0))
        f.write(struct.pack("<i", n_vocab))
        for token in [bytes([b]) for b in range(256)] + [EOT]:
            f.write(struct.pack("<I", len(token)) + token)
        for name, arr in w.items():
            ne = list(reversed(arr.shape))  # ggml order: fastest-varying dimension first
            raw = name.encode()
            f.write(struct.pack(f"<3i{len(ne)}i", len(ne), len(raw), 0, *ne) + raw)
            f.write(np.ascontiguousarray(arr, dtype="<f4").tobytes())
    return TinyGPT2(path, w, n_vocab, n_ctx, n_embd, n_head, n_layer)


def _norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g + b


def reference_logits(model: TinyGPT2, tokens: list[int]) -> np.ndarray:
    """Logits of the last position, computed in float64 numpy (GPT-2 forward pass)."""
    w = {k: v.astype(np.float64) for k, v in model.weights.items()}
    n, d, h = len(tokens), model.n_embd, model.n_head
    x = w["model/wte"][tokens] + w["model/wpe"][:n]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(model.n_layer):
        p = f"model/h{i}"
        a = _norm(x, w[f"{p}/ln_1/g"], w[f"{p}/ln_1/b"])
        qkv = a @ w[f"{p}/attn/c_attn/w"].T + w[f"{p}/attn/c_attn/b"]
        q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(n, h, d // h).transpose(1, 0, 2)
                   for j in range(3))
        att = q @ k.transpose(0, 2, 1) / np.sqrt(d // h) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        out = (att @ v).transpose(1, 0, 2).reshape(n, d)
        x = x + out @ w[f"{p}/attn/c_proj/w"].T + w[f"{p}/attn/c_proj/b"]
        m = _norm(x, w[f"{p}/ln_2/g"], w[f"{p}/ln_2/b"])
        m = m @ w[f"{p}/mlp/c_fc/w"].T + w[f"{p}/mlp/c_fc/b"]
        m = 0.5 * m * (1 + np.tanh(np.sqrt(2 / np.pi) * (m + 0.044715 * m**3)))
        x = x + m @ w[f"{p}/mlp/c_proj/w"].T + w[f"{p}/mlp/c_proj/b"]
    x = _norm(x, w["model/ln_f/g"], w["model/ln_f/b"])
    return (x[-1] @ w["model/wte"].T).astype(np.float32)
