"""The curation section of report.html (and the page `k2 curate` writes on its own)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from k2_recipes.report import _CSS, html_table


def _pct(x: float) -> str:
    return f"{x:.1%}"


def curate_report_section(result: Any) -> str:
    """HTML: fault catching, drops per filter, duplicate groups, cluster balance, timings."""
    c = result.catch
    s = result.settings
    t = s["thresholds"]
    catch_rows = [
        {"quantity": "samples in the shards", "value": result.manifest.num_rows},
        {"quantity": "clean scenes / injected faults", "value": f"{c['clean']} / {c['faults']}"},
        {"quantity": "kept (training scenes)", "value": len(result.keys)},
        {
            "quantity": "faults dropped (recall)",
            "value": f"{c['faults_dropped']} ({_pct(c['recall'])})",
        },
        {
            "quantity": "faults dropped for the expected reason",
            "value": f"{c['faults_dropped_expected_reason']} ({_pct(c['recall_expected_reason'])})",
        },
        {"quantity": "clean scenes dropped", "value": c["clean_dropped"]},
        {
            "quantity": "distinct clean layouts still shown by a kept sample",
            "value": f"{c['kept_layouts']} of {c['clean_layouts']}",
        },
        {"quantity": "precision (faults / all dropped)", "value": _pct(c["precision"])},
    ]
    g = result.groups
    b = result.balance
    timing_rows = [{"step": k, "seconds": round(v, 2)} for k, v in result.timings.items()]
    return f"""<h2>Data curation (<code>k2 curate</code>)</h2>
<p class=muted>The training scenes were rendered to {s["resolution"]} px JPEG (quality
{s["jpeg_quality"]}, 4:4:4) in {s["shards"]} WebDataset shards (img2dataset layout, scene JSON
sidecar), with faults injected at random slots. Then: the CPU tier (decode once, filter
statistics, md5 + 12x12 phash + colorhash) on {s["workers"]} worker processes; dedup with phash
&le; {s["phash_radius"]} and colorhash &le; {s["colorhash_radius"]}; hierarchical k-means of the
kept samples. Pretraining trains on the kept scenes. Thresholds: short side &ge;
{t["min_short_side"]}, Laplacian variance &le; {t["max_laplacian_var"]}, border &le;
{t["max_border_fraction"]}, complexity &le; {t["max_complexity"]}, entropy rule
{"off" if t["min_entropy"] is None else t["min_entropy"]} (the world is flat shapes on a flat
background, see <code>k2_recipes.presets.WORLD_THRESHOLDS</code>). Curation took
{result.timings["total"]:.1f} s.</p>
<h3>Fault catching</h3>{html_table(catch_rows)}
<h3>Per injected kind</h3>{html_table(result.fault_rows)}
<p class=muted>"expected reason": near-duplicates by the dedup step, flat borders by the
border rule, noise by the Laplacian-variance or complexity rule, corrupt files as
<code>broken_file</code> with the right kind (truncated, empty, not_an_image).</p>
<h3>Clean scenes dropped, by why</h3>{html_table(result.clean_drop_rows, empty="<p>none</p>")}
<p class=muted>"Same layout": the same objects with the same colours, sizes, counts and cells,
so the same captions up to phrasing; the two renders differ only by the scenes' position
jitter, below what a 12x12 phash sees.</p>
<h3>Drops per step and reason</h3>{html_table(result.drop_rows)}
<h3>Duplicate groups</h3>
<p>{g["groups"]} groups ({g["samples_in_groups"]} samples, the largest {g["largest"]}):
{g["with_injected_copy"]} hold an injected copy, {g["with_two_or_more_clean"]} hold two or more
clean scenes. Groups are transitive (connected components), so a chain of near-duplicates can
join scenes that differ by more than the radii.</p>
{html_table(g["size_histogram"])}
<h4>Injected near-duplicates: hash distance to their source</h4>{html_table(result.distance_rows)}
<h3>Cluster balance</h3>
<p class=muted>Embeddings: a fixed Gaussian random projection ({b.levels[0]} leaf and
{b.levels[1]} top clusters, cosine k-means with resampling) of each kept image's 16 px
thumbnail minus its median colour: deterministic and download-free. The balanced sample
water-fills the budget over the clusters (what midtraining would draw); pretraining uses
every kept scene.</p>
{html_table(b.size_stats, empty="<p>too few samples to cluster</p>")}
{html_table(b.top_rows)}
<h3>Curation time</h3>{html_table(timing_rows)}
<p class=muted>Wall seconds, except the indented rows: per-phase wall seconds summed over the
shards, and the workers' CPU seconds. On a machine shared with other jobs the wall seconds
grow; the CPU seconds hardly do.</p>
"""


def write_curate_page(result: Any, path: Path, *, title: str) -> Path:
    """A self-contained report page with the curation section only (`k2 curate`)."""
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"{curate_report_section(result)}</body></html>",
        encoding="utf-8",
    )
    return path
