"""FSDP2 trainer pieces the recipes use: `InMemoryDataset` (2 processes == 1, exact resume),
per-stage float8 (skipped on CPU: warned once, state carried over exactly), PMA snapshots in the
WSD stable phase and their streamed average, Muon on sharded parameters, launcher flags."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import warnings
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from k2_dit.buckets import ResolutionStage
from k2_dit.config import ConfigError
from k2_dit.distributed import (
    InMemoryDataset,
    PretrainDataset,
    SyntheticData,
    TrainConfig,
    pma_snapshot_path,
    train,
)
from k2_dit.distributed.__main__ import main as launcher_main
from k2_dit.distributed.__main__ import preset as launcher_preset
from k2_dit.distributed._trainer import _check_dataset
from k2_dit.train import Float8SkippedWarning


def _load_launcher():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("dit_gloo_launch.py")
    spec = importlib.util.spec_from_file_location("k2_dit_tests_gloo_launch_b", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.launch_two


launch_two = _load_launcher()

# The launcher's tiny model (width 32, 2 blocks, GQA 4/2), captions of at most 16 tokens.
_LAUNCHER_MODEL = launcher_preset("tiny", 2).model
TEXT = replace(_LAUNCHER_MODEL.text, max_tokens=16)
MODEL = replace(_LAUNCHER_MODEL, text=TEXT)
STAGES = (  # latents 4x4 (32 px square, 8 px cells), then 8x8 square and 6x10 (48x80 px)
    ResolutionStage(resolution=32, train_shift=1.0, steps=5, latent_factor=8, max_aspect=2.0),
    ResolutionStage(resolution=64, train_shift=2.0, steps=5, latent_factor=8, max_aspect=2.0),
)
N, V, L = 32, 2, 6


def make_dataset(*, caption_weights=(0.7, 0.3), seed=0) -> InMemoryDataset:
    """Stage 0: one float tensor, all in the 32x32 bucket; stage 1: uint8 per-sample images,
    half 64x64, half 48x80; two caption variants in bf16."""
    g = torch.Generator().manual_seed(seed)
    square = torch.randn(N, 4, 4, 4, generator=g)
    per_sample = [
        torch.randint(0, 256, (4, 8, 8) if i < N // 2 else (4, 6, 10), generator=g).to(torch.uint8)
        for i in range(N)
    ]
    text = torch.randn(N, V, L, 3, 16, generator=g).to(torch.bfloat16)
    lengths = torch.randint(1, L + 1, (N, V), generator=g)
    mask = torch.arange(L) < lengths[..., None]
    return InMemoryDataset(
        MODEL,
        STAGES,
        images={0: square, 1: per_sample},
        text=text,
        mask=mask,
        caption_weights=caption_weights,
        seed=seed,
    )


DATA = make_dataset()
# Warmup 2, decay round(0.2 * 10) = 2, stable 6: snapshot steps n with 2 < n <= 8 and
# n % 2 == 0 are 4, 6, 8; pma_keep=2 keeps (and averages) 6 and 8.
BASE = TrainConfig(
    model=MODEL,
    stages=STAGES,
    global_batch_size=4,
    lr=1e-3,
    warmup_steps=2,
    decay_fraction=0.2,
    mixed_precision="none",
    device="cpu",
    pma_every=2,
    pma_keep=2,
    checkpoint_dir="unused",
)
PMA_STEPS, PMA_KEPT = [4, 6, 8], [6, 8]
MUON = dataclasses.replace(
    BASE,
    stages=tuple(dataclasses.replace(s, steps=1) for s in STAGES),
    optimizer="muon",
    pma_every=0,
    warmup_steps=0,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only cost on a shared 2-core box
    yield
    torch.set_num_threads(before)


def _losses(result) -> list[float]:
    return [r["loss"] for r in result.records]


def _float8_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, Float8SkippedWarning)]


@contextlib.contextmanager
def _float8_caught():
    """Record Float8SkippedWarning only (other warnings keep the suite's filters)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Float8SkippedWarning)
        yield caught


# ---------------------------------------------------------------- 2 gloo processes


def _worker(rank: int, port: int, out: str, runs: list[tuple[str, TrainConfig]]) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    results = {}
    for name, cfg in runs:
        with _float8_caught() as caught:
            res = train(cfg, dataset=DATA)
        results[name] = {
            "losses": _losses(res),
            "start": res.start_step,
            "end": res.end_step,
            "pma": [r["step"] for r in res.records if r["pma"]],
            "float8_warnings": len(_float8_warnings(caught)),
            "pma_checkpoint": str(res.pma_checkpoint) if res.pma_checkpoint else None,
        }
    with open(os.path.join(out, f"results-{rank}.json"), "w") as f:
        json.dump(results, f)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One launch of 2 gloo processes on the in-memory dataset: an uninterrupted PMA run; the
    same run with per-stage float8 stopped at step 7 (after the stage switch) and resumed;
    Muon stopped after 1 of 2 steps (one per stage) and resumed."""
    out = tmp_path_factory.mktemp("fsdp2_data")
    split = dataclasses.replace(
        BASE, checkpoint_dir=str(out / "split"), float8=("tensorwise", "rowwise")
    )
    runs = [
        ("full", dataclasses.replace(BASE, checkpoint_dir=str(out / "full"))),
        ("first", dataclasses.replace(split, stop_after=7)),
        ("rest", split),
        ("muon_first", dataclasses.replace(MUON, checkpoint_dir=str(out / "muon"), stop_after=1)),
        ("muon_rest", dataclasses.replace(MUON, checkpoint_dir=str(out / "muon"))),
    ]
    launch_two(_worker, out, runs)
    ranks = [json.loads((out / f"results-{r}.json").read_text()) for r in range(2)]
    return out, ranks


def test_in_memory_resume_with_a_float8_stage_switch_is_exact(two_processes) -> None:
    out, (res, res1) = two_processes
    full, first, rest = res["full"], res["first"], res["rest"]
    assert (first["start"], first["end"], rest["start"], rest["end"]) == (0, 7, 7, 10)
    # float8 is skipped on CPU, so the split run differs from the plain one only by the
    # rebuild at the stage switch (step 5) and the resume (step 7): both must be exact.
    assert first["losses"] + rest["losses"] == full["losses"]
    assert all(math.isfinite(v) for v in full["losses"])
    assert res1["full"]["losses"] == full["losses"]  # every rank records the global loss
    for name in ("final/model.safetensors", "pma/average/model.safetensors"):
        a, b = load_file(out / "full" / name), load_file(out / "split" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The skip warning comes once per invocation, from rank 0 only.
    assert [res[k]["float8_warnings"] for k in ("full", "first", "rest")] == [0, 1, 1]
    assert [res1[k]["float8_warnings"] for k in ("full", "first", "rest")] == [0, 0, 0]


def test_in_memory_two_processes_match_one_process(two_processes, tmp_path) -> None:
    out, (res, _) = two_processes
    one = train(dataclasses.replace(BASE, checkpoint_dir=str(tmp_path)), dataset=DATA)
    assert one.info.world_size == 1
    assert _losses(one) == pytest.approx(res["full"]["losses"], rel=1e-5)
    a = load_file(tmp_path / "pma" / "average" / "model.safetensors")
    b = load_file(out / "full" / "pma" / "average" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def test_pma_average_is_the_mean_of_the_stable_phase_snapshots(two_processes) -> None:
    out, (res, res1) = two_processes
    run = out / "full"
    assert res["full"]["pma"] == res1["full"]["pma"] == PMA_STEPS
    assert res["full"]["pma_checkpoint"] == str(run / "pma" / "average")
    assert res1["full"]["pma_checkpoint"] is None  # written by rank 0
    # Older snapshots are pruned once pma_keep newer ones exist.
    kept = sorted(p.name for p in (run / "pma").glob("step-*"))
    assert kept == [pma_snapshot_path(run, s).name for s in PMA_KEPT]
    snaps = [load_file(pma_snapshot_path(run, s) / "model.safetensors") for s in PMA_KEPT]
    avg = load_file(run / "pma" / "average" / "model.safetensors")
    assert avg.keys() == snaps[0].keys()
    for k in avg:
        ref = sum(s[k].double() for s in snaps) / len(snaps)
        torch.testing.assert_close(avg[k].double(), ref, rtol=1e-6, atol=1e-7)
    assert not torch.equal(snaps[0]["final_proj.weight"], snaps[1]["final_proj.weight"])
    meta = json.loads((run / "pma" / "average" / "config.json").read_text())
    assert meta["step"] == 10 and meta["extra"]["pma"]["steps"] == PMA_KEPT


def test_muon_runs_on_fsdp2_shards_and_resumes(two_processes) -> None:
    _, (res, _) = two_processes
    assert (res["muon_first"]["end"], res["muon_rest"]["start"]) == (1, 1)
    sharded = res["muon_first"]["losses"] + res["muon_rest"]["losses"]
    one = train(dataclasses.replace(MUON, checkpoint_dir=None), dataset=DATA)
    # Newton-Schulz runs in bf16 on DTensor shards (redistributed) vs whole matrices.
    assert _losses(one) == pytest.approx(sharded, rel=1e-3)
    assert len(sharded) == 2 and all(math.isfinite(v) for v in sharded)


# ---------------------------------------------------------------- PMA, one process


def test_pma_snapshots_only_in_the_stable_phase_and_equal_the_model(tmp_path) -> None:
    # 6 steps, warmup 2, decay round(1.2) = 1, stable 3: only step 4 in (2, 5] is a multiple
    # of 2, so with pma_keep=1 the stop at step 4 is the one snapshot.
    stages = (STAGES[0], dataclasses.replace(STAGES[1], steps=1))
    cfg = dataclasses.replace(BASE, checkpoint_dir=str(tmp_path), stages=stages, pma_keep=1)
    stopped = train(dataclasses.replace(cfg, stop_after=4), dataset=DATA)
    assert [r["pma"] for r in stopped.records] == [False, False, False, True]
    snap = load_file(pma_snapshot_path(tmp_path, 4) / "model.safetensors")
    model = stopped.model.state_dict()
    assert snap.keys() == model.keys() and all(torch.equal(snap[k], model[k]) for k in snap)
    rest = train(cfg, dataset=DATA)
    assert rest.start_step == 4 and [r["pma"] for r in rest.records] == [False, False]
    lrs = [r["lr"] for r in stopped.records + rest.records]
    assert lrs[1] < lrs[2] == lrs[3] == cfg.lr  # warmup, then the stable phase
    avg = load_file(rest.pma_checkpoint / "model.safetensors")
    assert all(torch.equal(avg[k], snap[k]) for k in snap)  # the mean of one snapshot


def test_pma_ema_weighting_matches_the_reference(tmp_path) -> None:
    cfg = dataclasses.replace(
        BASE, checkpoint_dir=str(tmp_path), pma_every=1, pma_keep=3, pma_weighting="ema"
    )
    cfg = dataclasses.replace(cfg, pma_ema_decay=0.5, stages=(STAGES[0], STAGES[1]))
    res = train(cfg, dataset=DATA)
    # Window (2, 8], every step: 3..8; the newest 3 are 6, 7, 8 with weights 1/4 : 1/2 : 1.
    assert [r["step"] for r in res.records if r["pma"]] == [3, 4, 5, 6, 7, 8]
    lrs = [r["lr"] for r in res.records]  # lrs[n - 1]: the LR of the update before snapshot n
    assert lrs[1] < cfg.lr and lrs[2:8] == [cfg.lr] * 6 and lrs[9] < cfg.lr
    snaps = [load_file(pma_snapshot_path(tmp_path, s) / "model.safetensors") for s in (6, 7, 8)]
    w = [0.25 / 1.75, 0.5 / 1.75, 1.0 / 1.75]
    avg = load_file(res.pma_checkpoint / "model.safetensors")
    for k in avg:
        ref = sum(wi * s[k].double() for wi, s in zip(w, snaps, strict=True))
        torch.testing.assert_close(avg[k].double(), ref, rtol=1e-6, atol=1e-7)


def test_pma_and_float8_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="pma_every needs checkpoint_dir"):
        dataclasses.replace(BASE, checkpoint_dir=None)
    with pytest.raises(ConfigError, match=r"gives 3 snapshots \[4, 6, 8\].*pma_keep=4"):
        dataclasses.replace(BASE, pma_keep=4)
    with pytest.raises(ConfigError, match="1 per-stage recipes for 2 stages"):
        dataclasses.replace(BASE, float8=("tensorwise",))
    with pytest.raises(ConfigError, match=r"pma_ema_decay=1.5 must lie in \(0, 1\]"):
        dataclasses.replace(BASE, pma_ema_decay=1.5)


# ---------------------------------------------------------------- float8 on CPU


def test_float8_on_cpu_warns_once_and_carries_state_over_exactly(caplog) -> None:
    cfg = dataclasses.replace(
        BASE,
        stages=tuple(dataclasses.replace(s, steps=2) for s in STAGES),
        checkpoint_dir=None,
        pma_every=0,
        warmup_steps=0,
    )
    plain = train(cfg, dataset=DATA)
    caplog.set_level(logging.INFO, logger="k2_dit.distributed")
    with _float8_caught() as caught:
        f8 = train(dataclasses.replace(cfg, float8=("tensorwise", "rowwise")), dataset=DATA)
    skipped = _float8_warnings(caught)
    assert len(skipped) == 1 and "no CUDA device" in skipped[0]
    assert len(f8.records) == 4 and all(r["float8"] is None for r in f8.records)
    assert {k: (r.recipe, r.converted) for k, r in f8.float8_reports.items()} == {
        0: ("tensorwise", False),
        1: ("rowwise", False),
    }
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("float8 ")]
    assert len(lines) == 2 and "would convert 0 linear layers" in lines[0]
    # The rebuild at the stage switch (no conversion on CPU) changes nothing.
    assert _losses(f8) == _losses(plain)


# ---------------------------------------------------------------- InMemoryDataset


def test_in_memory_dataset_buckets_and_pixel_mapping() -> None:
    d = make_dataset()
    assert isinstance(d, PretrainDataset) and len(d) == N
    square = d.tables[0].buckets.index((32, 32))
    assert d.bucket_of[0].tolist() == [square] * N
    b64, b48 = d.tables[1].buckets.index((64, 64)), d.tables[1].buckets.index((48, 80))
    assert d.bucket_of[1].tolist() == [b64] * (N // 2) + [b48] * (N // 2)
    x0, _, _ = d.batch([20, 17], stage=1, bucket=b48, step=0)
    ref = torch.stack([d.images[1][i].double() / 127.5 - 1.0 for i in (20, 17)])
    assert x0.dtype == torch.float32 and x0.shape == (2, 4, 6, 10)
    torch.testing.assert_close(x0.double(), ref, rtol=0, atol=1e-6)
    assert float(x0.min()) >= -1.0 and float(x0.max()) <= 1.0
    x0, _, _ = d.batch([3, 0], stage=0, bucket=square, step=0)
    assert torch.equal(x0, d.images[0][[3, 0]])
    with pytest.raises(ValueError, match=r"samples \[0\] are not in bucket"):
        d.batch([0], stage=1, bucket=b48, step=0)


def test_caption_variants_are_drawn_per_sample_step_and_seed() -> None:
    d = make_dataset(caption_weights=(0.6, 0.4))
    sq = int(d.bucket_of[0][0])
    _, text, mask = d.batch([5, 9, 2], stage=0, bucket=sq, step=11)
    for row, i in enumerate((5, 9, 2)):
        v = d.variant_of(i, step=11)
        assert torch.equal(text[row], d.text[i, v]) and torch.equal(mask[row], d.mask[i, v])
    # A sample's draw does not depend on its batch-mates (so not on the rank split).
    _, alone, _ = d.batch([9], stage=0, bucket=sq, step=11)
    assert torch.equal(alone[0], text[1])
    draws = torch.tensor([[d.variant_of(i, step=s) for i in range(N)] for s in range(100)])
    assert torch.equal(
        draws, torch.tensor([[d.variant_of(i, step=s) for i in range(N)] for s in range(100)])
    )
    p = (draws == 1).double().mean().item()
    assert abs(p - 0.4) < 4 * math.sqrt(0.4 * 0.6 / draws.numel())
    other = make_dataset(caption_weights=(0.6, 0.4), seed=1)
    assert not torch.equal(
        draws[:10],
        torch.tensor([[other.variant_of(i, step=s) for i in range(N)] for s in range(10)]),
    )
    never = make_dataset(caption_weights=(1.0, 0.0))
    assert all(never.variant_of(i, step=s) == 0 for i in range(N) for s in range(20))


def test_single_caption_dataset_returns_the_stored_captions() -> None:
    d = make_dataset()
    one = InMemoryDataset(
        MODEL,
        STAGES,
        images={0: d.images[0], 1: d.images[1]},
        text=d.text[:, 0],
        mask=d.mask[:, 0],
    )
    _, text, mask = one.batch([4, 1], stage=0, bucket=int(one.bucket_of[0][0]), step=3)
    assert torch.equal(text, d.text[[4, 1], 0]) and torch.equal(mask, d.mask[[4, 1], 0])


def _bad(**change):
    d = make_dataset()
    kwargs = {
        "images": {0: d.images[0], 1: d.images[1]},
        "text": d.text,
        "mask": d.mask,
        "caption_weights": (0.5, 0.5),
    }
    kwargs.update(change)
    return lambda: InMemoryDataset(MODEL, STAGES, **kwargs)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_bad(images={0: torch.zeros(N, 4, 4, 4)}), r"keys \[0\] but there are 2 stages"),
        (_bad(images={0: torch.zeros(N, 3, 4, 4), 1: DATA.images[1]}), "3 channels"),
        (_bad(images={0: torch.zeros(N, 4, 5, 5), 1: DATA.images[1]}), "5x5, which is no bucket"),
        (_bad(images={0: torch.zeros(N - 1, 4, 4, 4), 1: DATA.images[1]}), "must be \\[N=32"),
        (_bad(images={0: DATA.images[0], 1: DATA.images[1][:-1]}), "31 images but"),
        (_bad(images={0: DATA.images[0].long(), 1: DATA.images[1]}), "dtype torch.int64"),
        (_bad(text=torch.zeros(N, V, L, 2, 16)), "num_layers=3"),
        (
            _bad(text=torch.zeros(N, V, 17, 3, 16), mask=torch.ones(N, V, 17, dtype=torch.bool)),
            "max_tokens=16",
        ),
        (_bad(mask=torch.ones(N, V, L)), "pass a bool tensor"),
        (_bad(mask=torch.ones(N, L, dtype=torch.bool)), r"mask must have shape \(32, 2, 6\)"),
        (_bad(caption_weights=(1.0,)), "1 entries for V=2"),
        (_bad(caption_weights=(-1.0, 2.0)), "must be finite, >= 0"),
        (_bad(text=DATA.text[:, 0], mask=DATA.mask[:, 0]), "needs several caption variants"),
    ],
)
def test_in_memory_dataset_rejects_bad_input(make, match) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


def test_train_rejects_a_dataset_for_other_stages() -> None:
    cfg = dataclasses.replace(BASE, checkpoint_dir=None, pma_every=0)
    with pytest.raises(TypeError, match="does not implement PretrainDataset"):
        _check_dataset(object(), cfg)  # train's type hint stops it earlier under beartype
    one_stage = SyntheticData(MODEL, STAGES[:1], BASE.data, seed=0)
    with pytest.raises(ValueError, match=r"1 bucket tables .* but the run has 2 stages"):
        train(cfg, dataset=one_stage)


# ---------------------------------------------------------------- launcher


def test_launcher_float8_and_pma_flags(tmp_path, capsys) -> None:
    args = ["--preset", "tiny", "--steps", "6", "--device", "cpu", "--precision", "none"]
    flags = ["--float8", "tensorwise,rowwise", "--pma-every", "2", "--pma-keep", "2"]
    with _float8_caught() as caught:
        launcher_main([*args, *flags, "--checkpoint-dir", str(tmp_path)])
    assert len(_float8_warnings(caught)) == 1
    assert _float8_warnings(caught)[0].startswith("float8 tensorwise requested but skipped")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 6 steps, no warmup, decay round(1.2) = 1: stable window 1..5, snapshots at 2 and 4.
    assert summary["steps"] == [1, 6] and summary["pma_snapshots"] == [2, 4]
    assert summary["float8"] == ["None"]  # skipped on CPU
    assert (tmp_path / "pma" / "average" / "model.safetensors").is_file()
    with pytest.raises(SystemExit):
        launcher_main([*args, "--float8", "fp8"])
