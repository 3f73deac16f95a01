"""report.html: loss curves, sample grids with prompts, verifier scores, parameter/FLOPs table.

Self-contained (inline SVG plots, images embedded as base64) so the file can be mailed around.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from k2_recipes.rundir import RunDir

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.grid{display:flex;gap:2em;flex-wrap:wrap}.muted{color:#777;font-size:90%}
ol.prompts{font-size:85%;columns:2}
"""


def svg_line_plot(
    series: dict[str, list[tuple[float, float]]],
    *,
    width: int = 520,
    height: int = 260,
    x_label: str = "step",
    y_label: str = "",
    log_y: bool = False,
) -> str:
    """A dependency-free SVG line plot of one or more (x, y) series."""
    import math

    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    points = [p for s in series.values() for p in s]
    if not points:
        return "<p class=muted>(no data)</p>"

    def fy(y: float) -> float:
        return math.log10(max(y, 1e-12)) if log_y else y

    xs = [p[0] for p in points]
    ys = [fy(p[1]) for p in points]
    x0, x1 = min(xs), max(xs) or 1.0
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pad_l, pad_b, pad_t, pad_r = 56, 36, 12, 12
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return pad_t + h - (fy(y) - y0) / (y1 - y0) * h

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    parts.append(
        f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="none" stroke="#999"/>'
    )
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        label = f"{10**yv:.3g}" if log_y else f"{yv:.3g}"
        ypix = pad_t + h - h * k / 4
        parts.append(
            f'<text x="{pad_l - 4}" y="{ypix + 4}" font-size="10" text-anchor="end">{label}</text>'
        )
        xv = x0 + (x1 - x0) * k / 4
        parts.append(
            f'<text x="{pad_l + w * k / 4}" y="{pad_t + h + 14}" font-size="10" '
            f'text-anchor="middle">{xv:.4g}</text>'
        )
    parts.append(
        f'<text x="{pad_l + w / 2}" y="{height - 4}" font-size="11" '
        f'text-anchor="middle">{html.escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="12" y="{pad_t + h / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad_t + h / 2})">{html.escape(y_label)}</text>'
    )
    for i, (name, pts) in enumerate(series.items()):
        c = colours[i % len(colours)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{path}"/>')
        parts.append(
            f'<text x="{pad_l + 8}" y="{pad_t + 14 + 13 * i}" font-size="11" fill="{c}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def html_table(rows: list[dict[str, Any]], *, empty: str = "") -> str:
    """One HTML table from a list of dicts (columns from the first row); `empty` if no rows."""
    if not rows:
        return empty
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"
    return "" if v is None else str(v)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _posttrain_sections(run: RunDir, result: Any) -> str:
    posttrain = getattr(result, "posttrain", None)
    if posttrain is None:
        return ""
    # Imported here: the post-training report imports this module's plot helpers.
    from k2_recipes.posttrain import posttrain_report_sections

    return posttrain_report_sections(posttrain, images_dir=run.path / "images")


def _curate_section(result: Any) -> str:
    curate = getattr(result, "curate", None)
    if curate is None:
        return ""
    from k2_recipes.curate import curate_report_section  # it imports this module's helpers

    return curate_report_section(curate)


def write_report(run: RunDir, cfg: Any, result: Any, *, title: str) -> Path:
    """Write run.path/report.html from metrics.jsonl, the image grids and the result object."""
    metrics = run.read_metrics()
    loss = {
        stage: [(m["step"], m["loss_smooth"]) for m in metrics if m.get("stage") == stage]
        for stage in ("low_res", "high_res")
    }
    loss = {k: v for k, v in loss.items() if v}
    lr = {"lr": [(m["step"], m["lr"]) for m in metrics if "lr" in m]}

    eval_rows = []
    for key, ev in result.evals.items():
        row = {"checkpoint": key, "verifier score": ev.score, "fully correct": ev.fully_correct}
        row.update({f"{t} pass rate": v for t, v in ev.per_type.items()})
        eval_rows.append(row)

    grids = []
    side = cfg.eval.grid_size
    for key, ev in result.evals.items():
        png = run.path / "images" / f"{key}.png"
        prompts = "".join(
            f"<li>{html.escape(p)} <span class=muted>({s:.2f})</span></li>"
            for p, s in zip(ev.prompts[: side * side], ev.sample_scores, strict=False)
        )
        grids.append(
            f"<div><h3>{html.escape(key)}</h3>{_img(png)}"
            f"<details><summary>prompts, row by row (verifier score)</summary>"
            f"<ol class=prompts>{prompts}</ol></details></div>"
        )

    flops_rows = [{"quantity": k, "value": v} for k, v in result.flops.items()]
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class=muted>Run directory <code>{html.escape(str(run.path))}</code>. Pretraining took
{result.train_seconds:.0f} s ({result.total_seconds:.0f} s with data preparation and evaluation).
Scores: the world's deterministic verifier on {cfg.eval.num_prompts} held-out prompts at
{cfg.eval.resolution}px, {cfg.eval.steps} Euler steps, guidance {cfg.eval.guidance_scale}.
The verifier score averages the colour+shape (<code>object</code>), <code>count</code> and
<code>position</code> requirements; "fully correct" needs all of them.</p>
<h2>Verifier scores</h2>{html_table(eval_rows)}
{_curate_section(result)}
<h2>Training</h2><div class=grid>
<div>{svg_line_plot(loss, y_label="flow-matching loss (smoothed)", log_y=True)}</div>
<div>{svg_line_plot(lr, y_label="learning rate")}</div></div>
<h2>Samples</h2><div class=grid>{"".join(grids)}</div>
<h2>Model</h2><h3>Parameters by component</h3>{html_table(result.param_rows)}
<h3>FLOPs</h3>{html_table(flops_rows)}
<p class=muted>FLOPs follow the 6·N-per-token convention for matmul weights plus attention
(k2_dit.model.flops_per_sample).</p>
{_posttrain_sections(run, result)}
</body></html>
"""
    out = run.path / "report.html"
    out.write_text(doc, encoding="utf-8")
    return out
