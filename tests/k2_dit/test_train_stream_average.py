"""Streaming PMA over safetensors checkpoints against float64 averages; checkpoint selection."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import k2_dit.train._stream_average as stream
from k2_dit.train import (
    average_checkpoints,
    load_checkpoint,
    merge_weights,
    pma_checkpoints,
    save_checkpoint,
)

FLOAT_KEYS = ("w", "b")


def _sd(seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(4, 3, generator=g).to(dtype),
        "b": torch.randn(3, generator=g).to(dtype),
        "steps": torch.tensor(seed, dtype=torch.int64),
    }


def _write(tmp_path, sds, stem="ckpt"):
    paths = []
    for i, sd in enumerate(sds):
        path = tmp_path / f"{stem}_{i}.safetensors"
        save_file(sd, str(path))
        paths.append(path)
    return paths


def _ref_average(sds, weights):
    # Σ_i w_i θ_i / Σ_i w_i with explicit float64 loops.
    total = sum(weights)
    out = {}
    for k in FLOAT_KEYS:
        acc = torch.zeros(sds[0][k].shape, dtype=torch.float64)
        for w, sd in zip(weights, sds, strict=True):
            acc = acc + (w / total) * sd[k].double()
        out[k] = acc
    return out


@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.0, 5.0]], ids=["simple", "weighted"])
def test_average_matches_float64_reference(tmp_path, weights):
    sds = [_sd(i) for i in range(4)]
    out = average_checkpoints(_write(tmp_path, sds), weights)
    ref = _ref_average(sds, weights or [1.0] * 4)
    assert set(out) == set(sds[0])
    for k in FLOAT_KEYS:
        assert out[k].dtype == torch.float32
        torch.testing.assert_close(out[k].double(), ref[k], rtol=1e-6, atol=1e-6)
    assert torch.equal(out["steps"], sds[-1]["steps"])  # integers come from the newest


def test_ema_weights_favour_the_newest(tmp_path):
    sds = [_sd(i) for i in range(5)]
    paths = _write(tmp_path, sds)
    decay = 0.6
    out = average_checkpoints(paths, ema_decay=decay)
    # w_i ∝ d^(N-1-i), oldest first: the newest gets d^0 = 1.
    raw = [1.0, decay, decay**2, decay**3, decay**4][::-1]
    ref = _ref_average(sds, raw)
    for k in FLOAT_KEYS:
        torch.testing.assert_close(out[k].double(), ref[k], rtol=1e-6, atol=1e-6)
    # d = 1 is the simple average; merge_weights' EMA recursion is reachable through weights=.
    flat = average_checkpoints(paths, ema_decay=1.0)
    torch.testing.assert_close(flat["w"].double(), _ref_average(sds, [1.0] * 5)["w"])
    alpha = 0.25
    recursion = sds[0]["w"].double()
    for sd in sds[1:]:
        recursion = alpha * sd["w"].double() + (1 - alpha) * recursion
    rec = average_checkpoints(paths, merge_weights("ema", 5, ema_alpha=alpha))
    torch.testing.assert_close(rec["w"].double(), recursion, rtol=1e-6, atol=1e-6)


def test_bf16_checkpoints_accumulate_in_float32(tmp_path):
    sds = [_sd(i, torch.bfloat16) for i in range(12)]
    out = average_checkpoints(_write(tmp_path, sds))
    assert out["w"].dtype == torch.bfloat16
    ref = _ref_average(sds, [1.0] * 12)["w"]
    # Within one bf16 rounding of the exact mean: the sum itself is not rounded to bf16.
    torch.testing.assert_close(out["w"].double(), ref, rtol=2**-8, atol=1e-6)


def test_at_most_one_checkpoint_tensor_is_materialised_at_a_time(tmp_path, monkeypatch):
    sds = [{k: v for k, v in _sd(i).items() if k in FLOAT_KEYS} for i in range(4)]
    paths = _write(tmp_path, sds)
    live, peak, reads = [0], [0], [0]

    def _freed() -> None:
        live[0] -= 1

    class _Counting:
        def __init__(self, handle):
            self._handle = handle

        def __enter__(self):
            self._inner = self._handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self._handle.__exit__(*exc)

        def keys(self):
            return self._inner.keys()

        def get_slice(self, key):
            return self._inner.get_slice(key)

        def get_tensor(self, key):
            tensor = self._inner.get_tensor(key)
            live[0] += 1
            reads[0] += 1
            peak[0] = max(peak[0], live[0])
            weakref.finalize(tensor, _freed)
            return tensor

    real = stream.safe_open
    monkeypatch.setattr(stream, "safe_open", lambda *a, **kw: _Counting(real(*a, **kw)))
    out = average_checkpoints(paths)
    assert reads[0] == len(paths) * len(FLOAT_KEYS)  # every tensor read exactly once
    assert peak[0] == 1  # never two checkpoint tensors alive together
    assert live[0] == 0  # none kept: the output holds fresh accumulators
    torch.testing.assert_close(out["w"].double(), _ref_average(sds, [1.0] * 4)["w"])


@dataclass(frozen=True, kw_only=True)
class _TinyConfig:
    dim: int = 3


def _linear(cfg: _TinyConfig, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(cfg.dim, 2)


def test_checkpoint_folders_and_files_mix_and_the_result_saves(tmp_path):
    cfg = _TinyConfig()
    models = [_linear(cfg, s) for s in range(3)]
    dirs = [save_checkpoint(tmp_path / f"step{i}", m, cfg, step=i) for i, m in enumerate(models)]
    raw = tmp_path / "raw.safetensors"
    save_file({k: v.detach().clone() for k, v in models[2].state_dict().items()}, str(raw))
    merged = average_checkpoints([dirs[0], dirs[1] / "model.safetensors", raw])
    for k in ("weight", "bias"):
        ref = sum(m.state_dict()[k].double() for m in models) / 3
        torch.testing.assert_close(merged[k].double(), ref, rtol=1e-6, atol=1e-6)
    target = _linear(cfg, 99)
    target.load_state_dict(merged)
    out = save_checkpoint(tmp_path / "pma", target, cfg, step=2, extra={"pma": 3})
    back, _, meta = load_checkpoint(out, lambda c: nn.Linear(c.dim, 2), config_cls=_TinyConfig)
    assert meta["extra"] == {"pma": 3}
    torch.testing.assert_close(back.weight, merged["weight"], rtol=0, atol=0)


def test_mismatches_name_the_file_and_key(tmp_path):
    sd = _sd(0)
    good, missing, shaped, typed = _write(
        tmp_path,
        [
            sd,
            {"w": sd["w"], "steps": sd["steps"]},
            {**sd, "b": torch.zeros(4)},
            {**sd, "w": sd["w"].double()},
        ],
    )
    with pytest.raises(ValueError, match=rf"{missing.name} does not hold .*missing keys \['b'\]"):
        average_checkpoints([good, missing])
    with pytest.raises(ValueError, match=rf"'b' has shape \(4,\) in .*{shaped.name} but \(3,\)"):
        average_checkpoints([good, shaped])
    with pytest.raises(ValueError, match=rf"'w' is F64 in .*{typed.name} but F32"):
        average_checkpoints([good, typed])


def test_bad_arguments_are_clear(tmp_path):
    (path,) = _write(tmp_path, [_sd(0)])
    with pytest.raises(ValueError, match="at least one"):
        average_checkpoints([])
    with pytest.raises(TypeError, match="not one path"):
        average_checkpoints(str(path))
    with pytest.raises(ValueError, match="not both"):
        average_checkpoints([path, path], [1.0, 1.0], ema_decay=0.5)
    with pytest.raises(ValueError, match="ema_decay"):
        average_checkpoints([path], ema_decay=0.0)
    with pytest.raises(ValueError, match="one weight each"):
        average_checkpoints([path, path], [1.0])
    with pytest.raises(ValueError, match="positive sum"):
        average_checkpoints([path, path], [0.0, 0.0])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        average_checkpoints([tmp_path / "nope.safetensors"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"without model\.safetensors"):
        average_checkpoints([tmp_path / "empty"])
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"")
    with pytest.raises(ValueError, match=r"not a \.safetensors file"):
        average_checkpoints([pickle])


def _run(tmp_path, steps):
    """Raw files step_XXXXXX.safetensors, each holding a distinct state dict."""
    paths = {}
    for s in steps:
        path = tmp_path / f"step_{s:06d}.safetensors"
        save_file(_sd(s), str(path))
        paths[s] = path
    return paths


def test_pma_selects_the_last_n_of_the_stable_phase_at_the_interval(tmp_path):
    paths = _run(tmp_path, range(0, 1001, 100))
    files = list(paths.values())[::-1]  # order of the input does not matter
    # Stable phase [200, 800): the newest stable checkpoint is 700; back by 200 twice.
    chosen = pma_checkpoints(files, last_n=3, interval=200, start_step=200, end_step=800)
    assert chosen == [paths[300], paths[500], paths[700]]
    assert pma_checkpoints(files, last_n=2, interval=100) == [paths[900], paths[1000]]
    by_step = {s: str(p) for s, p in paths.items()}
    assert pma_checkpoints(by_step, last_n=1, interval=1, end_step=650) == [paths[600]]
    merged = average_checkpoints(chosen, ema_decay=0.5)
    ref = _ref_average([_sd(300), _sd(500), _sd(700)], [0.25, 0.5, 1.0])
    torch.testing.assert_close(merged["w"].double(), ref["w"], rtol=1e-6, atol=1e-6)


def test_pma_reads_steps_from_checkpoint_folders_and_metadata(tmp_path):
    cfg = _TinyConfig()
    dirs = {s: save_checkpoint(tmp_path / f"c{s}", _linear(cfg, s), cfg, step=s) for s in (4, 8)}
    tagged = tmp_path / "latest.safetensors"
    save_file(_sd(1), str(tagged), metadata={"step": "12"})
    chosen = pma_checkpoints([dirs[4], dirs[8] / "model.safetensors", tagged], last_n=3, interval=4)
    assert chosen == [dirs[4], dirs[8] / "model.safetensors", tagged]


def test_pma_selection_errors_are_clear(tmp_path):
    paths = _run(tmp_path, range(0, 501, 100))
    files = list(paths.values())
    with pytest.raises(ValueError, match=r"needs stable-phase checkpoints at steps \[350, 500\]"):
        pma_checkpoints(files, last_n=2, interval=150)
    with pytest.raises(ValueError, match=r"\[-300, -100\] are missing"):
        pma_checkpoints(files, last_n=4, interval=200, start_step=0, end_step=400)
    with pytest.raises(ValueError, match="no checkpoint lies in the stable phase"):
        pma_checkpoints(files, last_n=1, interval=1, start_step=600)
    with pytest.raises(ValueError, match="last_n"):
        pma_checkpoints(files, last_n=0, interval=1)
    with pytest.raises(ValueError, match="interval"):
        pma_checkpoints(files, last_n=1, interval=0)
    with pytest.raises(ValueError, match="end_step"):
        pma_checkpoints(files, last_n=1, interval=1, start_step=5, end_step=5)
    with pytest.raises(ValueError, match="both step 100"):
        pma_checkpoints([paths[100], tmp_path / "step_000100.safetensors"], last_n=1, interval=1)
    anonymous = tmp_path / "model_final.safetensors"
    save_file(_sd(0), str(anonymous))
    with pytest.raises(ValueError, match="cannot tell the training step"):
        pma_checkpoints([anonymous], last_n=1, interval=1)
    cfg = _TinyConfig()
    stepless = save_checkpoint(tmp_path / "stepless", _linear(cfg, 0), cfg)
    with pytest.raises(ValueError, match="records no step"):
        pma_checkpoints([stepless], last_n=1, interval=1)
