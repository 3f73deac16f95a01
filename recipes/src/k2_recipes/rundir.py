"""The run directory: resolved config, metrics.jsonl, checkpoints, images and report.html."""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

_PACKAGES = ("k2-data", "k2-dit", "k2-rl", "k2-distill", "k2-expander", "k2-styleref", "k2-recipes")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return repr(value)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    """Versions and machine facts written next to every run (what produced these numbers)."""
    import torch

    versions = {}
    for name in (*_PACKAGES, "torch", "transformers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "git_sha": _git_sha(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": versions,
    }


class RunDir:
    """A run directory shared by every stage of one `k2` invocation."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        (self.path / "images").mkdir(exist_ok=True)
        self._metrics = (self.path / "metrics.jsonl").open("a", encoding="utf-8")
        self.started = time.time()

    def write_config(self, name: str, config: Any, **extra: Any) -> Path:
        out = self.path / f"{name}.json"
        payload = {"config": _jsonable(config), "environment": environment(), **_jsonable(extra)}
        out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return out

    def log(self, **record: Any) -> None:
        """Append one JSON line to metrics.jsonl (flushed, so a crash keeps what was logged)."""
        record.setdefault("elapsed_s", round(time.time() - self.started, 3))
        self._metrics.write(json.dumps(_jsonable(record)) + "\n")
        self._metrics.flush()

    def write_json(self, name: str, payload: Any) -> Path:
        out = self.path / name
        out.write_text(json.dumps(_jsonable(payload), indent=2) + "\n", encoding="utf-8")
        return out

    def close(self) -> None:
        self._metrics.close()

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
