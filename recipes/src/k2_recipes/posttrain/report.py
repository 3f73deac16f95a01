"""HTML sections for report.html: stage-effect table, DPO vs STPO Δ curves, GRPO reward, prompt pool."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from k2_recipes.report import html_table, svg_line_plot

_POOL_COLUMNS = ("prompt", "status", "visits", "mean", "recent_std", "success_rate", "weight")


def ema(values: list[float], *, decay: float = 0.8) -> list[float]:
    """Exponential moving average (per-step batch means are noisy: t is redrawn every step)."""
    out, acc = [], None
    for v in values:
        acc = v if acc is None else decay * acc + (1 - decay) * v
        out.append(acc)
    return out


def _series(curve: list[dict[str, float]], x: str, y: str) -> list[tuple[float, float]]:
    xs = [r[x] for r in curve]
    return list(zip(xs, ema([r[y] for r in curve]), strict=True))


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _headline(result: Any) -> str:
    ev = result.evals
    parts = []
    if "grpo" in ev and "stpo" in ev:
        d = 100 * (ev["grpo"]["no_cfg"].score - ev["stpo"]["no_cfg"].score)
        parts.append(
            f"GRPO changed the CFG-free held-out verifier score by <b>{d:+.1f} points</b> over "
            f"its starting (STPO) checkpoint ({ev['stpo']['no_cfg'].score:.3f} → "
            f"{ev['grpo']['no_cfg'].score:.3f}); target +10."
        )
    for name in ("dpo", "stpo"):
        curve = result.preference_curves.get(name)
        if curve:
            tail = curve[-max(1, len(curve) // 5) :]
            dw = sum(r["delta_w"] for r in tail) / len(tail)
            dl = sum(r["delta_l"] for r in tail) / len(tail)
            parts.append(
                f"{name.upper()}: mean Δ_w = {dw:.3g}, Δ_l = {dl:.3g} over the last "
                f"{len(tail)} steps (failure mode: both > 0)."
            )
    return "<p>" + "<br>".join(parts) + "</p>" if parts else ""


def posttrain_report_sections(result: Any, *, images_dir: Path | None = None) -> str:
    """HTML for the post-training part of report.html (needs report.py's CSS classes).

    Args:
        result: a `PosttrainResult`.
        images_dir: the run's images/ folder; if given, CFG-free sample grids are embedded.

    Returns:
        An HTML fragment: stage-effect table, Δ_w/Δ_l curves of every preference run, the
        GRPO reward curve, prompt-pool statistics and timings.
    """
    rows = result.stage_rows()
    if rows:
        start = rows[0]["score (no_cfg)"]
        for r in rows:
            r["Δ no_cfg vs pretrained (points)"] = 100 * (r["score (no_cfg)"] - start)
    pieces = [
        "<h2>Post-training: effect of each stage</h2>",
        "<p class=muted>Held-out verifier score (colour+shape, count, position) of every "
        "checkpoint on the same prompts and noise, CFG-free (guidance 1) and guided.</p>",
        _table_or_none(rows),
        _headline(result),
    ]
    pairs = result.pairs
    if pairs:
        pieces += [
            "<h3>Preference pairs (delta learning, every pair with an on-policy sample)</h3>",
            _table_or_none(
                [
                    {"quantity": "kept pairs", "value": pairs.get("pairs")},
                    *({"quantity": f"kept: {k}", "value": v} for k, v in pairs["by_kind"].items()),
                    *(
                        {"quantity": f"rejected: {k}", "value": v}
                        for k, v in pairs["rejected"].items()
                    ),
                    *(
                        {"quantity": f"mean rubric reward: {k}", "value": v}
                        for k, v in pairs["mean_reward"].items()
                    ),
                ]
            ),
        ]
    if result.preference_curves:
        deltas, acc = {}, {}
        for name, curve in result.preference_curves.items():
            deltas[f"{name} Δ_w"] = _series(curve, "step", "delta_w")
            deltas[f"{name} Δ_l"] = _series(curve, "step", "delta_l")
            acc[f"{name} accuracy"] = _series(curve, "step", "accuracy")
            acc[f"{name} margin"] = _series(curve, "step", "margin")
        pieces += [
            "<h3>DPO vs STPO: Δ = policy error − reference error (EMA of batch means)</h3>",
            "<p class=muted>Δ_w > 0 means the policy fits the preferred image worse than the "
            "reference; both Δ_w and Δ_l rising is the divergence the report describes.</p>",
            "<div class=grid><div>",
            svg_line_plot(deltas, y_label="Δ (velocity MSE)"),
            "</div><div>",
            svg_line_plot(acc, y_label="implicit accuracy / margin"),
            "</div></div>",
        ]
    if result.grpo_curve:
        reward = {"reward mean": _series(result.grpo_curve, "iteration", "reward_mean")}
        reward["zero-std groups"] = _series(result.grpo_curve, "iteration", "zero_std_groups")
        pieces += [
            "<h3>CFG-free GRPO: rollout reward (EMA) per iteration</h3>",
            svg_line_plot(reward, x_label="iteration", y_label="rubric reward"),
        ]
    if result.pool_rows:
        status: dict[str, int] = {}
        for r in result.pool_rows:
            status[r["status"]] = status.get(r["status"], 0) + 1
        seen = sorted(result.pool_rows, key=lambda r: -r["visits"])[:12]
        pieces += [
            "<h3>Prompt pool</h3>",
            _table_or_none([{"status": k, "prompts": v} for k, v in sorted(status.items())]),
            "<details><summary>most visited prompts</summary>",
            _table_or_none([{c: r[c] for c in _POOL_COLUMNS} for r in seen]),
            "</details>",
        ]
    if images_dir is not None:
        grids = []
        for key in ("pretrained", "sft", "stpo", "grpo"):
            png = Path(images_dir) / f"posttrain-{key}-no_cfg.png"
            if png.is_file():
                grids.append(f"<div><h4>{html.escape(key)} (CFG-free)</h4>{_img(png)}</div>")
        pieces += ["<h3>Samples</h3><div class=grid>", *grids, "</div>"]
    secs = [{"stage": k, "seconds": v} for k, v in result.seconds.items()]
    pieces += ["<h3>Post-training time</h3>", _table_or_none(secs)]
    return "\n".join(pieces)


def _table_or_none(rows: list[dict[str, Any]]) -> str:
    return html_table(rows, empty="<p class=muted>(none)</p>")
