"""DiT training-step throughput and MFU: the k2 model vs a minimal speed-of-light stack, bf16/fp8.

Times forward + backward of the default k2 model at about 1.2B parameters (width 2048, 24
single-stream blocks, 16 query / 4 KV heads, sigmoid gate, 3D RoPE, shared modulation with a
per-block bias), 1024 image + 256 text tokens, batch 16, bf16, eager and compiled. Rows:

- `k2-model`: the whole DiT (patch embed, text adapter, blocks, final layer);
- `k2-blocks`: its 24 blocks alone on 1280 tokens (text mask and RoPE as the model passes them);
- `k2-blocks-nomask`: the same without the key mask (every token real: the flash kernel);
- `minimal`: equal width/depth, fused QKV, SDPA, SwiGLU, RMSNorm; no gate, RoPE, conditioning;
- float8 `tensorwise` / `rowwise` (torchao via `k2_dit.train.convert_to_float8`) of k2-blocks.

FLOPs come from the formula (6·N per token for matmuls + 12·L·d_attn·S² attention; the whole
model uses `k2_dit.model.flops_per_sample`), MFU is against an 8192³ bf16 matmul measured in
the same run. On an H200:

    python benches/dit_step.py --json dit_step.json
    python benches/dit_step.py --tiny            # CPU smoke run, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
import warnings

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from k2_dit.config import AttentionConfig, DiTConfig, TextConfig
from k2_dit.model import DiT, flops_per_sample, per_token_weights
from k2_dit.rope import token_positions
from k2_dit.train import convert_to_float8


class MinimalBlock(nn.Module):
    """Pre-norm block: RMSNorm, fused QKV, SDPA, output; RMSNorm, fused SwiGLU (w1|w3), w2."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.out(a)
        g, u = self.w13(self.norm2(x)).chunk(2, dim=-1)
        return x + self.w2(F.silu(g) * u)


class Stack(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


def k2_config(tiny: bool) -> DiTConfig:
    if tiny:
        text = TextConfig(encoder_dim=32, num_layers=3, aggregation_heads=4, refiner_layers=1)
        attention = AttentionConfig(num_heads=4, num_kv_heads=2)
        return DiTConfig(in_channels=8, dim=64, depth=2, attention=attention, text=text)
    return DiTConfig(dim=2048, depth=24, attention=AttentionConfig(num_heads=16, num_kv_heads=4))


def attention_flops(depth: int, d_attn: int, tokens: int) -> int:
    return 3 * 4 * depth * d_attn * tokens**2  # fwd QK^T + PV = 4·d·S² per layer, x3 for bwd


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn, *, warmup: int, iters: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a, b = (
        torch.randn(n, n, device=device, dtype=dtype),
        torch.randn(n, n, device=device, dtype=dtype),
    )
    s = seconds_per_call(lambda: a @ b, warmup=3, iters=10, device=device)
    return 2 * n**3 / s / 1e12


def build(variant: str, cfg: DiTConfig, args, device, dtype, recipe: str | None):
    """(module, step function, FLOPs per step, parameters) for one row."""
    b, n_img, n_txt = args.batch, args.image_tokens, args.text_tokens
    side = int(n_img**0.5)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device, dtype)

    if variant == "minimal":
        model = Stack(
            [
                MinimalBlock(cfg.dim, cfg.attention.num_heads, cfg.mlp_hidden)
                for _ in range(cfg.depth)
            ]
        )
        tokens = n_img + n_txt
        weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
        flops = b * (6 * weights * tokens + attention_flops(cfg.depth, cfg.dim, tokens))
        x = rand(b, tokens, cfg.dim).requires_grad_()

        def forward():
            h = x
            for blk in model.blocks:
                h = blk(h)
            return h
    else:
        model = DiT(cfg)
        if variant == "k2-model":
            flops = b * flops_per_sample(cfg, image_tokens=n_img, text_tokens=n_txt)
            lat = rand(b, cfg.in_channels, side, n_img // side)
            text = rand(b, n_txt, cfg.text.num_layers, cfg.text.encoder_dim)
            t, mask = (
                torch.rand(b, device=device),
                torch.ones(b, n_txt, dtype=torch.bool, device=device),
            )

            def forward():
                return model(lat, t, text, mask)
        else:  # k2-blocks, k2-blocks-nomask
            tokens = n_img + n_txt
            d_attn = cfg.attention.num_heads * cfg.head_dim
            flops = b * (
                6 * per_token_weights(cfg)["joint"] * tokens
                + attention_flops(cfg.depth, d_attn, tokens)
            )
            x = rand(b, tokens, cfg.dim).requires_grad_()
            no_mask = args.no_mask or variant == "k2-blocks-nomask"
            mask = None if no_mask else torch.ones(b, tokens, dtype=torch.bool, device=device)
            with torch.no_grad():
                model.to(device, dtype)
                signal = model.conditioning(torch.rand(b, device=device))
                pos = token_positions(
                    cfg.rope, n_text=n_txt, grid=(1, side, n_img // side), device=device
                )
                tables = model.rope(pos)

            def forward():
                h = x
                for blk in model.blocks:
                    h = blk(h, signal, rope_tables=tables, mask=mask)
                return h

    model.to(device, dtype)
    timed = model.blocks if variant.startswith("k2-blocks") else model
    params = sum(p.numel() for p in timed.parameters())
    if recipe is not None:
        with warnings.catch_warnings(record=True):
            _, report = convert_to_float8(
                timed, recipe=recipe, min_features=args.float8_min_features
            )
        if not report.converted:
            return None, f"float8 skipped: {report.reason}", flops, params
    if args.compile_now:
        for blk in model.blocks:
            blk.compile()
        if variant == "k2-model":
            model.text_adapter.compile()
    leaves = [*model.parameters(), *([x] if variant != "k2-model" else [])]

    def step():
        for leaf in leaves:
            leaf.grad = None
        forward().float().square().mean().backward()

    return model, step, flops, params


def _kind(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("flash", "fmha", "attention", "cudnn", "sdpa")):
        return "attention"
    if any(k in n for k in ("gemm", "nvjet", "xmma", "cutlass", "matmul", "scaled_mm")):
        return "matmul"
    if n.startswith("triton"):
        return "fused elementwise (triton)"
    return "other"


def kernel_breakdown(step, *, steps: int = 2) -> dict[str, float]:
    """CUDA kernel time per step by kind (matmul, attention, triton elementwise, other), in ms."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    out: dict[str, float] = {}
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", 0.0) or getattr(ev, "cuda_time_total", 0.0)
        if t and ev.device_type == torch.autograd.DeviceType.CUDA:
            kind = _kind(ev.key)
            out[kind] = out.get(kind, 0.0) + t / 1e3 / steps
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def check_formula(cfg: DiTConfig) -> dict[str, float]:
    """Formula vs torch's FlopCounterMode on MHA (the counter rejects SDPA with enable_gqa)."""
    mha = dataclasses.replace(cfg, attention=AttentionConfig(kind="mha", num_heads=4))
    with torch.device("meta"):
        model = DiT(mha)
    n_img, n_txt = 16, 8
    lat, t = torch.randn(1, mha.in_channels, 4, 4, device="meta"), torch.rand(1, device="meta")
    text = torch.randn(1, n_txt, mha.text.num_layers, mha.text.encoder_dim, device="meta")
    mask = torch.ones(1, n_txt, dtype=torch.bool, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(lat, t, text, mask).float().square().mean().backward()
    return {
        "formula": flops_per_sample(mha, image_tokens=n_img, text_tokens=n_txt),
        "counted": counter.get_total_flops(),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tiny", action="store_true", help="tiny model, CPU friendly")
    p.add_argument("--batch", type=int)
    p.add_argument("--image-tokens", type=int)
    p.add_argument("--text-tokens", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--modes", help="comma list of eager,compiled (default both; --tiny: eager)")
    p.add_argument("--variants", default="k2-model,k2-blocks,k2-blocks-nomask,minimal")
    p.add_argument(
        "--float8", default="tensorwise,rowwise", help="recipes for k2-blocks ('' for none)"
    )
    p.add_argument(
        "--float8-min-features",
        type=int,
        default=1024,
        help="convert linears whose in and out features are both at least this",
    )
    p.add_argument(
        "--no-mask", action="store_true", help="k2-blocks without the key mask (flash path)"
    )
    p.add_argument("--json", help="write rows and metadata here")
    p.add_argument(
        "--profile", action="store_true", help="CUDA kernel time per step by kind for every row"
    )
    args = p.parse_args()
    tiny = args.tiny
    args.batch = args.batch or (2 if tiny else 16)
    args.image_tokens = args.image_tokens or (16 if tiny else 1024)
    args.text_tokens = args.text_tokens or (8 if tiny else 256)
    steps, warmup = args.steps or (2 if tiny else 10), args.warmup or (2 if tiny else 3)
    modes = (args.modes or ("eager" if tiny else "eager,compiled")).split(",")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = k2_config(tiny)
    peak = matmul_peak(device, dtype, 512 if tiny or device.type == "cpu" else 8192)

    rows = []
    plan = [(v, m, None) for m in modes for v in args.variants.split(",")]
    plan += [
        ("k2-blocks", "compiled", r) for r in args.float8.split(",") if r and "compiled" in modes
    ]
    for variant, mode, recipe in plan:
        args.compile_now = mode == "compiled"
        torch.manual_seed(0)
        model, step, flops, params = build(variant, cfg, args, device, dtype, recipe)
        row = {
            "variant": variant,
            "mode": mode,
            "precision": recipe or str(dtype).split(".")[-1],
            "params_m": params / 1e6,
            "tflop_per_step": flops / 1e12,
        }
        if model is None:
            row["note"] = step
        else:
            s = seconds_per_call(step, warmup=warmup, iters=steps, device=device)
            row.update(step_ms=1e3 * s, tflops=flops / s / 1e12, mfu=flops / s / 1e12 / peak)
            if args.profile and device.type == "cuda":
                row["kernel_ms"] = kernel_breakdown(step)
        rows.append(row)
        print(json.dumps(row), flush=True)  # partial results survive a later failure
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows}, f, indent=2)
        del model, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for r in rows:
        same = [q for q in rows if q["mode"] == r["mode"] and "mfu" in q]
        high = ("bfloat16", "float32")
        base = next(
            (q for q in same if q["variant"] == r["variant"] and q["precision"] in high), None
        )
        ref = next((q for q in same if q["variant"] == "minimal"), None)
        if "step_ms" in r and base is not None:
            r["speedup_vs_high_precision"] = base["step_ms"] / r["step_ms"]
        if "mfu" in r and ref is not None:
            r["mfu_vs_minimal"] = r["mfu"] / ref["mfu"]

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    print(
        f"device {name}, torch {torch.__version__}, matmul peak {peak:.4g} TFLOP/s ({dtype}), "
        f"batch {args.batch}, {args.image_tokens} image + {args.text_tokens} text tokens"
    )
    print(
        "| variant | mode | precision | params (M) | step (ms) | TFLOP/s | MFU | speedup vs bf16 | MFU vs minimal |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "note" in r:
            print(
                f"| {r['variant']} | {r['mode']} | {r['precision']} | {r['params_m']:.4g} | {r['note']} | | | | |"
            )
            continue
        print(
            f"| {r['variant']} | {r['mode']} | {r['precision']} | {r['params_m']:.4g} | "
            f"{r['step_ms']:.1f} | {r['tflops']:.4g} | {100 * r['mfu']:.1f}% | "
            f"{r.get('speedup_vs_high_precision', 1):.2f}x | "
            f"{r.get('mfu_vs_minimal', float('nan')):.3f} |"
        )
    for r in rows:
        if "kernel_ms" in r:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in r["kernel_ms"].items())
            print(f"kernels per step, {r['variant']} {r['mode']} {r['precision']}: {parts} ms")
    check = check_formula(k2_config(True))
    print(
        f"FLOP formula check (tiny MHA, fwd+bwd): formula {check['formula']:,} vs counted {check['counted']:,}"
    )
    if args.json:
        meta = {
            "device": name,
            "torch": torch.__version__,
            "peak_tflops": peak,
            "dtype": str(dtype),
            "batch": args.batch,
            "image_tokens": args.image_tokens,
            "text_tokens": args.text_tokens,
            "steps": steps,
            "warmup": warmup,
            "date": time.strftime("%Y-%m-%d"),
            "formula_check": check,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
