"""`k2 curate`: curate the synthetic world on its own into runs/curate-<preset>."""

from __future__ import annotations

from k2_recipes.curate._report import write_curate_page
from k2_recipes.curate._stage import CurateResult, run_curate
from k2_recipes.presets import CurateConfig
from k2_recipes.rundir import RunDir


def print_curate_summary(result: CurateResult) -> None:
    """The fault-catching numbers on stdout."""
    c = result.catch
    print(
        f"  curate: {result.manifest.num_rows} samples -> {len(result.keys)} kept in "
        f"{result.seconds:.1f} s; faults dropped {c['faults_dropped']}/{c['faults']} "
        f"({c['faults_dropped_expected_reason']} for the expected reason), clean scenes "
        f"dropped {c['clean_dropped']}/{c['clean']}, precision {c['precision']:.3f}"
    )
    for row in result.fault_rows:
        print(
            f"    {row['kind']:>14} {row['variant']:>16}: injected {row['injected']:>5}, "
            f"dropped {row['dropped']:>5}, kept {row['kept']:>5}  [{row['reasons seen']}]"
        )


def run_curate_command(cfg: CurateConfig, *, preset: str) -> CurateResult:
    run = RunDir(cfg.run_dir or f"runs/curate-{preset}")
    run.write_config("config", cfg, preset=preset, command="curate")
    try:
        result = run_curate(cfg, run)
        report = write_curate_page(result, run.path / "report.html", title=f"k2 curate ({preset})")
    finally:
        run.close()
    print(f"\nk2 curate ({preset}): run directory {run.path}")
    print_curate_summary(result)
    print(f"  curated list: {result.out_dir / 'curated.parquet'}")
    print(f"  report: {report}")
    return result
