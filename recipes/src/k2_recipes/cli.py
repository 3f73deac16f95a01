"""The `k2` command: one subcommand per stage, each with presets and field overrides.

k2 demo                          # tiny preset on the embedded synthetic world
k2 demo --preset smoke           # about a minute, used by CI
k2 curate --preset tiny          # the curation stage alone (faults injected and caught)
k2 pretrain --preset tiny --pretrain.high-res.steps 3000
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import tyro

from k2_recipes.presets import CURATE_PRESETS, DEMO_PRESETS, PRETRAIN_PRESETS

_USAGE = """usage: k2 COMMAND [--preset NAME] [overrides...]

commands:
  demo       the whole pipeline on the embedded synthetic world (presets: {demo})
  curate     render the world to JPEG shards with injected faults, filter, dedup, cluster
             (presets: {curate})
  pretrain   progressive-resolution pretraining of the DiT (presets: {pretrain})
  posttrain  SFT, preference pairs, STPO / Flow-DPO and GRPO from a pretraining run
             (e.g. `k2 posttrain --preset tiny --pretrain-run runs/pretrain-tiny`)

`k2 COMMAND --help` lists every field that can be overridden.
"""


def _split_preset(args: list[str], presets: dict[str, Any], command: str) -> tuple[str, list[str]]:
    name = "tiny"
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--preset":
            if i + 1 >= len(args):
                raise SystemExit(f"k2 {command}: --preset needs a value, one of {sorted(presets)}")
            name = args[i + 1]
            i += 2
            continue
        if arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    if name not in presets:
        raise SystemExit(
            f"k2 {command}: unknown preset {name!r}; choose one of {sorted(presets)} "
            f"(e.g. `k2 {command} --preset tiny`)"
        )
    return name, rest


def _run(
    command: str, presets: dict[str, Any], runner: Callable[..., Any], args: list[str]
) -> None:
    name, rest = _split_preset(args, presets, command)
    config = tyro.cli(
        type(presets[name]),
        default=presets[name],
        args=rest,
        prog=f"k2 {command} [--preset {{{','.join(presets)}}}]",
        description=f"k2 {command} (preset {name!r}); every field can be overridden.",
    )
    runner(config, preset=name)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `k2` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = _USAGE.format(
        demo=", ".join(DEMO_PRESETS),
        curate=", ".join(CURATE_PRESETS),
        pretrain=", ".join(PRETRAIN_PRESETS),
    )
    if not args or args[0] in ("-h", "--help"):
        print(usage)
        return
    command, rest = args[0], args[1:]
    if command == "demo":
        from k2_recipes.demo import run_demo

        _run("demo", DEMO_PRESETS, run_demo, rest)
    elif command == "curate":
        from k2_recipes.curate import run_curate_command

        _run("curate", CURATE_PRESETS, run_curate_command, rest)
    elif command == "pretrain":
        from k2_recipes.pretrain import run_pretrain_command

        _run("pretrain", PRETRAIN_PRESETS, run_pretrain_command, rest)
    elif command == "posttrain":
        from k2_recipes.posttrain import POSTTRAIN_COMMAND_PRESETS, run_posttrain_command

        _run("posttrain", POSTTRAIN_COMMAND_PRESETS, run_posttrain_command, rest)
    else:
        raise SystemExit(f"k2: unknown command {command!r}\n\n{usage}")


if __name__ == "__main__":
    main()
