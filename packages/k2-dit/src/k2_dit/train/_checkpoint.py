"""Checkpoints as a directory: `model.safetensors` (weights) + `config.json` (config, step, extra).

Weights go through safetensors only (never pickle). Tied/shared parameters are handled by
`safetensors.torch.save_model`/`load_model`, which store one copy and restore the ties.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_model
from torch import Tensor, nn

from k2_dit.train._config_io import class_path, config_from_dict, config_to_dict, import_class

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "k2-checkpoint"
FORMAT_VERSION = 1


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: nn.Module,
    config: Any,
    *,
    step: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model.safetensors` and `config.json` into `directory` (created if needed).

    Each file is written to a temporary name and renamed, weights first, so a directory
    with a `config.json` always has complete weights next to it.

    Args:
        directory: destination folder.
        model: module whose `state_dict` is saved (shared tensors are stored once).
        config: the frozen dataclass the model was built from.
        step: optional training step, returned in `meta["step"]` on load.
        extra: optional JSON-serialisable metadata (metrics, data position, ...).

    Returns:
        The checkpoint directory.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(
            f"config must be a dataclass instance (got {type(config).__name__}); pass the "
            "frozen config the model was built from"
        )
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise TypeError(f"step={step!r} must be an int or None")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config_class": class_path(type(config)),
        "config": config_to_dict(config),
        "step": step,
        "extra": dict(extra or {}),
    }
    try:
        text = json.dumps(payload, indent=2)
    except TypeError as err:
        raise TypeError(f"`extra` must be JSON-serialisable: {err}") from err

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_NAME
    tmp = weights.with_name(weights.name + ".tmp")
    save_model(model, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, weights)
    _atomic_write_text(directory / CONFIG_NAME, text + "\n")
    return directory


def _read_payload(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise FileNotFoundError(
            f"checkpoint directory {directory} does not exist; expected a folder written by "
            f"k2_dit.train.save_checkpoint holding {WEIGHTS_NAME} and {CONFIG_NAME}"
        )
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} is missing; a k2 checkpoint directory holds {WEIGHTS_NAME} "
                f"and {CONFIG_NAME} (was the save interrupted, or is this another format?)"
            )
    path = directory / CONFIG_NAME
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a k2 checkpoint config (missing format={FORMAT!r})")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {payload['format_version']} but this k2_dit reads "
            f"up to {FORMAT_VERSION}; upgrade k2-dit"
        )
    return payload


def load_checkpoint(
    directory: str | os.PathLike[str],
    build: Callable[[Any], nn.Module] | None = None,
    *,
    config_cls: type | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module | dict[str, Tensor], Any, dict[str, Any]]:
    """Read a `save_checkpoint` directory back: rebuild the config, then the model, strictly.

    Args:
        directory: the checkpoint folder.
        build: `build(config) -> nn.Module`. The model is moved to `map_location` and its
            weights are loaded strictly (missing, unexpected or mis-shaped tensors raise).
            If None, the raw state dict (shared tensors stored once) is returned in place
            of the model, e.g. for merging.
        config_cls: dataclass to rebuild the config as; None imports the class recorded in
            `config.json`.
        map_location: device the weights are loaded to.

    Returns:
        (model or state dict, config, meta) with meta = {"step", "extra", "config_class",
        "directory"}.
    """
    directory = Path(directory)
    payload = _read_payload(directory)
    cls = config_cls if config_cls is not None else import_class(payload["config_class"])
    config = config_from_dict(cls, payload["config"])
    meta = {
        "step": payload.get("step"),
        "extra": payload.get("extra", {}),
        "config_class": payload["config_class"],
        "directory": str(directory),
    }
    weights = directory / WEIGHTS_NAME
    if build is None:
        return load_file(weights, device=str(map_location)), config, meta
    model = build(config).to(map_location)
    try:
        missing, unexpected = load_model(model, weights, strict=False, device=str(map_location))
    except RuntimeError as err:
        raise RuntimeError(
            f"{weights} does not fit the model built from its config: {err}"
        ) from err
    if missing or unexpected:
        raise RuntimeError(
            f"{weights} does not fit the model built from its config: missing keys "
            f"{sorted(missing)}, unexpected keys {sorted(unexpected)}; was `build` given the "
            "same model class that was saved?"
        )
    return model, config, meta
