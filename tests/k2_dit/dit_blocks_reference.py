"""Float64 reference transcriptions shared by the k2_dit block/model tests (not a test file).

Written from the equations (per head, per sample, explicit softmax), reading only the weights
of the module under test. Test files load it by path with importlib (pytest runs with
--import-mode=importlib and there is no conftest, so a plain sibling import would fail).
"""

from __future__ import annotations

import math

import torch


def silu(z: torch.Tensor) -> torch.Tensor:
    return z / (1 + torch.exp(-z))


def sigmoid(z: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + torch.exp(-z))


def norm_ref(v: torch.Tensor, sd: dict | None, prefix: str, kind: str, eps: float) -> torch.Tensor:
    """Norm over the last axis: RMSNorm with gain 1 + w, or LayerNorm (weight, bias); sd=None
    or a missing weight means no affine."""
    w = None if sd is None else sd.get(f"{prefix}.weight")
    if kind == "rmsnorm":
        y = v / torch.sqrt((v * v).sum(-1, keepdim=True) / v.shape[-1] + eps)
        return y if w is None else y * (1 + w)
    mean = v.sum(-1, keepdim=True) / v.shape[-1]
    var = ((v - mean) ** 2).sum(-1, keepdim=True) / v.shape[-1]
    y = (v - mean) / torch.sqrt(var + eps)
    return y if w is None else y * w + sd[f"{prefix}.bias"]


def mlp_ref(x: torch.Tensor, sd: dict, prefix: str, kind: str) -> torch.Tensor:
    """SwiGLU W2(silu(W1 x) ⊙ W3 x) or tanh-GeLU fc2(gelu(fc1 x))."""
    if kind == "swiglu":
        a = x @ sd[f"{prefix}.w1.weight"].T
        g = x @ sd[f"{prefix}.w3.weight"].T
        return (silu(a) * g) @ sd[f"{prefix}.w2.weight"].T
    h = x @ sd[f"{prefix}.fc1.weight"].T + sd[f"{prefix}.fc1.bias"]
    h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    return h @ sd[f"{prefix}.fc2.weight"].T + sd[f"{prefix}.fc2.bias"]


def rotate_ref(vec: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoFormer Eq. 34 on interleaved pairs (2i, 2i+1); dims past 2·len(cos) untouched."""
    out = vec.clone()
    for i in range(cos.shape[0]):
        x0, x1 = vec[2 * i], vec[2 * i + 1]
        out[2 * i] = x0 * cos[i] - x1 * sin[i]
        out[2 * i + 1] = x0 * sin[i] + x1 * cos[i]
    return out


def project_ref(X: torch.Tensor, attn, prefix: str, sd: dict, norm: str, eps: float):
    """Per-head q (list of H [n, d]), k, v (lists of G), gate logits (list of H or empty)."""
    cfg = attn.cfg
    H, G, d, gd = attn.heads, attn.kv_heads, attn.head_dim, attn.gate_dim
    p = f"{prefix}." if prefix else ""
    qs, gates, ks, vs = [], [], [], []
    if not attn.kv_only:
        for h in range(H):
            if cfg.kind == "mla" and cfg.q_lora_rank > 0:
                cq = norm_ref(X @ sd[f"{p}q_down.weight"].T, sd, f"{p}q_norm_latent", norm, eps)
                qs.append(cq @ sd[f"{p}q_up.weight"][h * d : (h + 1) * d].T)
                if gd:
                    gates.append(X @ sd[f"{p}gate_proj.weight"][h * gd : (h + 1) * gd].T)
            else:
                base = h * (d + gd)  # per-head [q_h, gate_h] rows of the widened q_proj
                qs.append(X @ sd[f"{p}q_proj.weight"][base : base + d].T)
                if gd:
                    gates.append(X @ sd[f"{p}q_proj.weight"][base + d : base + d + gd].T)
    for g in range(G):
        if cfg.kind == "mla":
            c = norm_ref(X @ sd[f"{p}kv_down.weight"].T, sd, f"{p}kv_norm", norm, eps)
            ks.append(c @ sd[f"{p}k_up.weight"][g * d : (g + 1) * d].T)
            vs.append(c @ sd[f"{p}v_up.weight"][g * d : (g + 1) * d].T)
        else:
            ks.append(X @ sd[f"{p}k_proj.weight"][g * d : (g + 1) * d].T)
            vs.append(X @ sd[f"{p}v_proj.weight"][g * d : (g + 1) * d].T)
    if cfg.qk_norm:
        qs = [norm_ref(q, sd, f"{p}q_norm", norm, eps) for q in qs]
        ks = [norm_ref(k, sd, f"{p}k_norm", norm, eps) for k in ks]
    return qs, ks, vs, gates


def rotate_heads_ref(heads: list, tables, bi: int, token_offset: int) -> list:
    """Rotate each head's tokens with the table head that head maps to (head // group)."""
    if tables is None:
        return heads
    tb = 0 if tables.cos.shape[0] == 1 else bi
    th = tables.cos.shape[1]
    out = []
    for j, v in enumerate(heads):
        t_head = j // (len(heads) // th)
        rows = []
        for t in range(v.shape[0]):
            cos = tables.cos[tb, t_head, token_offset + t].double()
            sin = tables.sin[tb, t_head, token_offset + t].double()
            rows.append(rotate_ref(v[t], cos, sin))
        out.append(torch.stack(rows))
    return out


def softmax_attention_ref(qs: list, ks: list, vs: list, valid: torch.Tensor) -> list:
    """Per query head h: softmax(q_h k_gᵀ / sqrt(d) masked) v_g with g = h // (H / G)."""
    if not valid.any():
        valid = torch.ones_like(valid)
    out = []
    for h, q in enumerate(qs):
        g = h // (len(qs) // len(ks))
        s = q @ ks[g].T / math.sqrt(q.shape[-1])
        s = s.masked_fill(~valid[None, :], float("-inf"))
        e = torch.exp(s - s.max(dim=1, keepdim=True).values)
        out.append((e / e.sum(dim=1, keepdim=True)) @ vs[g])
    return out


def output_ref(o_heads: list, gates: list, sd: dict, prefix: str) -> torch.Tensor:
    """W_O concat_h(o_h ⊙ σ(gate_h))."""
    if gates:
        o_heads = [o * sigmoid(g) for o, g in zip(o_heads, gates, strict=True)]
    p = f"{prefix}." if prefix else ""
    return torch.cat(o_heads, dim=1) @ sd[f"{p}o_proj.weight"].T


def attention_ref(x, attn, tables, mask, *, norm: str = "rmsnorm", eps: float = 1e-6):
    """Self-attention of one Attention module over x [b, n, D]."""
    sd = {k: v.detach() for k, v in attn.state_dict().items()}
    out = torch.zeros_like(x)
    for bi in range(x.shape[0]):
        qs, ks, vs, gates = project_ref(x[bi], attn, "", sd, norm, eps)
        qs, ks = rotate_heads_ref(qs, tables, bi, 0), rotate_heads_ref(ks, tables, bi, 0)
        valid = torch.ones(x.shape[1], dtype=torch.bool) if mask is None else mask[bi]
        out[bi] = output_ref(softmax_attention_ref(qs, ks, vs, valid), gates, sd, "")
    return out
