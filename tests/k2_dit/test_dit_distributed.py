"""FSDP2 trainer on CPU: deterministic resume over 2 gloo processes, 2-process == 1-process,
NaN/spike guard, activation checkpointing, and the torchrun launcher."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from k2_dit.buckets import ResolutionStage
from k2_dit.distributed import (
    GuardConfig,
    SpikeGuard,
    SyntheticConfig,
    TrainConfig,
    TrainingDiverged,
    derive_seed,
    step_generator,
    train,
)
from k2_dit.distributed.__main__ import main as launcher_main
from k2_dit.distributed.__main__ import preset as launcher_preset


def _load_launcher():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("dit_gloo_launch.py")
    spec = importlib.util.spec_from_file_location("k2_dit_tests_gloo_launch_a", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.launch_two


launch_two = _load_launcher()

# The launcher's tiny model (width 32, 2 blocks, GQA 4/2), captions of at most 16 tokens.
_LAUNCHER_MODEL = launcher_preset("tiny", 2).model
TEXT = replace(_LAUNCHER_MODEL.text, max_tokens=16)
MODEL = replace(_LAUNCHER_MODEL, text=TEXT)
STAGES = (  # 32 px then 64 px with 8 px latent cells: 16 then 64 image tokens per square bucket
    ResolutionStage(resolution=32, train_shift=1.0, steps=5, latent_factor=8, max_aspect=2.0),
    ResolutionStage(resolution=64, train_shift=2.0, steps=5, latent_factor=8, max_aspect=2.0),
)
BASE = TrainConfig(
    model=MODEL,
    stages=STAGES,
    global_batch_size=4,
    lr=1e-3,
    mixed_precision="none",
    device="cpu",
    data=SyntheticConfig(num_samples=64, text_tokens=6),
)
SHORT = dataclasses.replace(BASE, stages=(dataclasses.replace(STAGES[0], steps=3),))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine the
    # thread hand-offs cost more than the maths (10x on a loaded CI box).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _losses(result) -> list[float]:
    return [r["loss"] for r in result.records]


def _worker(rank: int, port: int, out: str, runs: list[tuple[str, TrainConfig]]) -> None:
    torch.set_num_threads(1)  # two processes share two cores
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    results = {}
    for name, cfg in runs:
        res = train(cfg)
        results[name] = {"losses": _losses(res), "start": res.start_step, "end": res.end_step}
    if rank == 0:
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f)


def _launch(out, runs: list[tuple[str, TrainConfig]]) -> dict:
    """Run `runs` in order on 2 forked gloo processes; rank 0's per-run results."""
    launch_two(_worker, out, runs)
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One launch of 2 gloo processes: uninterrupted run, interrupted + resumed run, bf16."""
    out = tmp_path_factory.mktemp("fsdp2")
    runs = [
        ("full", dataclasses.replace(BASE, checkpoint_dir=str(out / "full"))),
        ("first", dataclasses.replace(BASE, checkpoint_dir=str(out / "split"), stop_after=5)),
        ("rest", dataclasses.replace(BASE, checkpoint_dir=str(out / "split"))),
        ("bf16", dataclasses.replace(SHORT, mixed_precision="bf16")),
    ]
    return out, _launch(out, runs)


def test_resume_continues_the_uninterrupted_loss_curve_exactly(two_processes) -> None:
    out, res = two_processes
    full, first, rest = res["full"], res["first"], res["rest"]
    assert (first["start"], first["end"], rest["start"], rest["end"]) == (0, 5, 5, 10)
    assert first["losses"] + rest["losses"] == full["losses"]  # bitwise
    assert all(math.isfinite(v) for v in full["losses"])
    a = load_file(out / "full" / "final" / "model.safetensors")
    b = load_file(out / "split" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(torch.equal(a[k], torch.zeros_like(a[k])) for k in ("final_proj.weight",))


def test_two_processes_match_one_process_for_the_same_global_batch(two_processes, tmp_path) -> None:
    _, res = two_processes
    one = train(dataclasses.replace(BASE, checkpoint_dir=str(tmp_path / "one")))
    assert one.info.world_size == 1
    assert _losses(one) == pytest.approx(res["full"]["losses"], rel=1e-5)
    # bf16: FSDP2's parameter cast (2 processes) vs autocast (1 process).
    bf16 = train(dataclasses.replace(SHORT, mixed_precision="bf16"))
    assert _losses(bf16) == pytest.approx(res["bf16"]["losses"], rel=1e-2)


@pytest.mark.slow
def test_muon_on_sharded_parameters_matches_one_process(tmp_path) -> None:
    res = _launch(tmp_path, [("muon", dataclasses.replace(SHORT, optimizer="muon"))])
    muon = train(dataclasses.replace(SHORT, optimizer="muon"))
    # Newton-Schulz runs in bf16 on DTensor shards vs whole matrices: rounding differs.
    assert _losses(muon) == pytest.approx(res["muon"]["losses"], rel=1e-3)


def test_a_two_process_checkpoint_resumes_in_one_process(two_processes, tmp_path) -> None:
    out, res = two_processes
    # Only the step-5 checkpoint of the interrupted 2-process run (DCP reshards on load).
    shutil.copytree(out / "split" / "step-00000005", tmp_path / "cross" / "step-00000005")
    cont = train(dataclasses.replace(BASE, checkpoint_dir=str(tmp_path / "cross")))
    assert cont.start_step == 5
    assert _losses(cont) == pytest.approx(res["full"]["losses"][5:], rel=1e-5)


# ---------------------------------------------------------------- guard


def ref_guard(losses, *, factor, window, min_history, max_skips):
    """Plain transcription: skip non-finite losses and losses above factor × median of the
    last `window` accepted ones (once min_history are known); stop after max_skips in a row."""
    accepted, decisions, run = [], [], 0
    for v in losses:
        recent = accepted[-window:]
        bad = not math.isfinite(v) or (
            len(recent) >= min_history and v > factor * statistics.median(recent)
        )
        if bad:
            run += 1
            if run >= max_skips:
                decisions.append("stop")
                break
            decisions.append("skip")
        else:
            run = 0
            accepted.append(v)
            decisions.append("ok")
    return decisions


def test_spike_guard_matches_the_reference_rule_and_resumes_from_its_state() -> None:
    g = torch.Generator().manual_seed(0)
    losses = (1.0 + 0.3 * torch.rand(80, generator=g)).tolist()
    for i, v in [(3, float("nan")), (20, 9.0), (21, float("inf")), (40, 4.5), (41, 3.9)]:
        losses[i] = v
    losses[60:64] = [50.0] * 4
    cfg = GuardConfig(spike_factor=3.0, window=8, min_history=4, max_consecutive_skips=4)
    expected = ref_guard(losses, factor=3.0, window=8, min_history=4, max_skips=4)
    assert expected[-1] == "stop" and expected.count("skip") >= 5
    guard, got = SpikeGuard(cfg), []
    for step, v in enumerate(losses):
        if step == 30:  # a resumed guard decides exactly like the original
            restored = SpikeGuard(cfg)
            restored.load_state_dict(json.loads(json.dumps(guard.state_dict())))
            guard = restored
        try:
            got.append("ok" if guard.check(v, step=step) is None else "skip")
        except TrainingDiverged as err:
            assert "4 consecutive steps skipped" in str(err) and "lower learning rate" in str(err)
            got.append("stop")
            break
    assert got == expected
    assert SpikeGuard(cfg).check(1.0, float("nan")) == "gradient norm is nan"


def test_injected_nan_step_is_skipped_without_touching_the_weights(tmp_path) -> None:
    def poison(step, loss):
        return loss * float("nan") if step == 2 else loss

    cfg = dataclasses.replace(SHORT, export_final=False)
    skipped = train(dataclasses.replace(cfg, checkpoint_dir=str(tmp_path / "a")), loss_hook=poison)
    assert [r["skipped"] for r in skipped.records] == [None, None, "loss is nan"]
    reference = train(dataclasses.replace(cfg, checkpoint_dir=str(tmp_path / "b"), stop_after=2))
    a, b = skipped.model.state_dict(), reference.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and all(torch.isfinite(a[k]).all() for k in a)

    def spike(step, loss):
        return loss * 100.0 if step == 3 else loss

    guard = GuardConfig(min_history=2, window=4)
    run = train(dataclasses.replace(BASE, guard=guard, stages=STAGES[:1]), loss_hook=spike)
    assert "running median" in run.records[3]["skipped"]
    assert all(r["skipped"] is None for i, r in enumerate(run.records) if i != 3)


def test_consecutive_bad_steps_stop_the_run() -> None:
    def poison(step, loss):
        return loss * float("nan") if step >= 1 else loss

    cfg = dataclasses.replace(BASE, stages=STAGES[:1], guard=GuardConfig(max_consecutive_skips=3))
    with pytest.raises(TrainingDiverged, match="3 consecutive steps skipped"):
        train(cfg, loss_hook=poison)


# ---------------------------------------------------------------- determinism helpers, AC, CLI


def test_derived_seeds_are_stable_and_separate_streams() -> None:
    keys = [(s, t, r) for s in (0, 1) for t in range(50) for r in range(4)]
    seeds = [derive_seed(*k) for k in keys]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(3, 1, 2) == derive_seed(3, 1, 2) != derive_seed(3, 2, 1)
    a, b = step_generator(0, 5, 1), step_generator(0, 5, 1)
    assert torch.equal(torch.randn(8, generator=a), torch.randn(8, generator=b))
    with pytest.raises(ValueError, match="non-negative ints"):
        derive_seed(1, -2)


def test_activation_checkpointing_gives_the_same_losses() -> None:
    plain = train(SHORT)
    ac = train(dataclasses.replace(SHORT, activation_checkpointing=True))
    assert _losses(ac) == _losses(plain)


@pytest.mark.slow
def test_compiled_blocks_match_eager() -> None:
    eager = train(SHORT)
    compiled = train(dataclasses.replace(SHORT, compile=True))
    assert _losses(compiled) == pytest.approx(_losses(eager), rel=1e-4)


def test_launcher_prints_a_summary(tmp_path, capsys) -> None:
    args = ["--preset", "tiny", "--steps", "2", "--device", "cpu", "--precision", "none"]
    launcher_main([*args, "--checkpoint-dir", str(tmp_path)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["world_size"] == 1 and summary["steps"] == [1, 2] and summary["skipped"] == 0
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    assert (tmp_path / "final" / "model.safetensors").is_file()
