"""Checkpoint directories and lossless config round-trips."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal

import pytest
import torch
from safetensors import safe_open
from torch import nn

from k2_dit.config import AttentionConfig, DiTConfig, RopeConfig, TextConfig
from k2_dit.flow import ShiftSchedule
from k2_dit.train import config_from_dict, config_to_dict, load_checkpoint, save_checkpoint


def _tiny_config() -> DiTConfig:
    return DiTConfig(
        in_channels=8,
        dim=32,
        depth=2,
        attention=AttentionConfig(num_heads=4, num_kv_heads=2, gate="headwise"),
        rope=RopeConfig(axes_dims=(2, 2, 4), theta=256.0),
        text=TextConfig(encoder_dim=16, num_layers=3, aggregation="last", refiner_layers=0),
        mlp="gelu",
        timestep="adaln_mlp",
    )


class _TiedNet(nn.Module):
    """A small model with a tied table, a buffer and nested modules."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, dim)
        self.body = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.head = nn.Linear(dim, 10, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("count", torch.tensor([3], dtype=torch.int64))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.emb(idx)))


@dataclass(frozen=True, kw_only=True)
class _Inner:
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True, kw_only=True)
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    maybe: _Inner | None = None
    pairs: tuple[tuple[str, float], ...] = ()
    lr: float = 1e-3
    names: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)


def test_dit_config_round_trips_exactly_through_json():
    cfg = _tiny_config()
    data = json.loads(json.dumps(config_to_dict(cfg)))
    back = config_from_dict(DiTConfig, data)
    assert back == cfg
    assert type(back.attention) is AttentionConfig and type(back.text) is TextConfig
    assert type(back.rope.axes_dims) is tuple and back.rope.axes_dims == (2, 2, 4)
    assert isinstance(back.rope.theta, float)


def test_nested_unions_literals_and_tuple_of_tuples_round_trip():
    cfg = _Outer(
        inner=_Inner(mode="b", sizes=(3, 4, 5)),
        maybe=_Inner(),
        pairs=(("x", 1.0), ("y", 2.5)),
        lr=2,  # an int given to a float field is stored and restored as a number
        names=["p", "q"],
        extra={"k": 1},
    )
    back = config_from_dict(_Outer, json.loads(json.dumps(config_to_dict(cfg))))
    assert back.inner == cfg.inner and back.maybe == _Inner() and back.pairs == cfg.pairs
    assert type(back.pairs) is tuple and all(type(p) is tuple for p in back.pairs)
    assert back.lr == 2.0 and type(back.lr) is float
    assert back.names == ["p", "q"] and back.extra == {"k": 1}
    none = config_from_dict(_Outer, config_to_dict(_Outer()))
    assert none.maybe is None and none == _Outer()
    table = ShiftSchedule(kind="table", table=((256, 1.0), (1024, 2.0)))
    back_table = config_from_dict(ShiftSchedule, json.loads(json.dumps(config_to_dict(table))))
    assert back_table == table and type(back_table.table[0]) is tuple


def test_config_from_dict_errors_name_the_field():
    data = config_to_dict(_tiny_config())
    with pytest.raises(ValueError, match=r"config\.mlp: 'relu' is not one of"):
        config_from_dict(DiTConfig, {**data, "mlp": "relu"})
    with pytest.raises(ValueError, match="no fields \\['bogus'\\]"):
        config_from_dict(DiTConfig, {**data, "bogus": 1})
    with pytest.raises(ValueError, match=r"config\.attention\.num_heads"):
        config_from_dict(DiTConfig, {**data, "attention": {**data["attention"], "num_heads": "4"}})
    with pytest.raises(ValueError, match=r"config\.rope\.axes_dims"):
        config_from_dict(DiTConfig, {**data, "rope": {**data["rope"], "axes_dims": [2, 2]}})
    # Missing fields take the class default (configs written before a field existed).
    partial = {k: v for k, v in data.items() if k != "norm_eps"}
    assert config_from_dict(DiTConfig, partial).norm_eps == DiTConfig().norm_eps
    with pytest.raises(TypeError, match="cannot be stored"):
        config_to_dict(_Outer(extra={"k": torch.zeros(1)}))  # type: ignore[dict-item]


def test_save_load_round_trip_with_tied_weights(tmp_path):
    torch.manual_seed(0)
    cfg = _tiny_config()
    model = _TiedNet(cfg.dim)
    out_dir = save_checkpoint(tmp_path / "ckpt", model, cfg, step=120, extra={"loss": 0.5})
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(out_dir / "model.safetensors", framework="pt") as f:
        stored = set(f.keys())
    assert len(stored) == len(model.state_dict()) - 1  # the tied table is stored once

    loaded, cfg2, meta = load_checkpoint(out_dir, lambda c: _TiedNet(c.dim))
    assert cfg2 == cfg and type(cfg2) is DiTConfig  # class imported from config.json
    assert meta["step"] == 120 and meta["extra"] == {"loss": 0.5}
    assert loaded.head.weight is loaded.emb.weight
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)
    idx = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded(idx), model(idx), rtol=0, atol=0)

    state, cfg3, _ = load_checkpoint(out_dir, config_cls=DiTConfig)
    assert cfg3 == cfg and set(state) == stored


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        load_checkpoint(tmp_path / "nope")
    d = save_checkpoint(tmp_path / "c", _TiedNet(8), _tiny_config())
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        load_checkpoint(d)
    d2 = save_checkpoint(tmp_path / "c2", _TiedNet(8), _tiny_config())
    with pytest.raises(RuntimeError, match="does not fit"):
        load_checkpoint(d2, lambda c: _TiedNet(16))  # wrong shapes
    with pytest.raises(RuntimeError, match="does not fit"):
        load_checkpoint(d2, lambda c: nn.Sequential(_TiedNet(8), nn.Linear(2, 2)))  # wrong keys
    (d2 / "config.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a k2 checkpoint"):
        load_checkpoint(d2)


def test_save_rejects_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match="dataclass instance"):
        save_checkpoint(tmp_path / "a", _TiedNet(4), {"dim": 4})
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tmp_path / "b", _TiedNet(4), _tiny_config(), extra={"t": torch.zeros(1)})
    assert not (tmp_path / "b" / "config.json").exists()
