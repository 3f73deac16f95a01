"""On-disk cache of per-prompt text-encoder features, so the frozen encoder runs once per prompt."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from k2_dit.text._encoder import TextEncoder


class TextFeatureCache:
    """Per-prompt hidden states in safetensors files keyed by (prompt, encoder, max_length).

    Each file holds the `[n, k, e]` features of one prompt's real tokens (n may be 0) and the
    prompt, encoder fingerprint and max_length as metadata; a file whose metadata disagree
    (a hash collision or a hand-edited file) counts as a miss and is rewritten. Writes go through
    a temporary file and an atomic rename, so concurrent writers never leave a torn file.

    Args:
        directory: where the files live (created if missing).

    Attributes:
        hits, misses: prompt counts since construction (for logging and tests).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def key(self, prompt: str, encoder: TextEncoder, *, max_length: int) -> str:
        """File stem for one prompt."""
        text = "\x00".join((encoder.fingerprint, str(max_length), prompt))
        return hashlib.sha256(text.encode()).hexdigest()

    def encode(
        self, encoder: TextEncoder, prompts: list[str], *, max_length: int
    ) -> tuple[Float[Tensor, "b l k e"], Bool[Tensor, "b l"]]:
        """Same result as `encoder.encode(prompts, max_length=...)`, reading cached prompts.

        Args:
            encoder: the frozen encoder; only prompts missing from the cache are encoded.
            prompts: the texts.
            max_length: longest token sequence kept.

        Returns:
            hidden `[b, l, k, e]` (zero at padding) and mask `[b, l]`, padded to the longest
            prompt of this batch.
        """
        if not prompts:
            raise ValueError("prompts is empty: pass at least one prompt")
        features: dict[str, Tensor] = {}
        todo: list[str] = []
        for prompt in dict.fromkeys(prompts):
            cached = self._read(prompt, encoder, max_length=max_length)
            if cached is None:
                todo.append(prompt)
            else:
                features[prompt] = cached
        self.hits += sum(p in features for p in prompts)
        self.misses += len(prompts) - sum(p in features for p in prompts)
        if todo:
            hidden, mask = encoder.encode(todo, max_length=max_length)
            for i, prompt in enumerate(todo):
                real = hidden[i, mask[i]]
                self._write(prompt, encoder, real, max_length=max_length)
                features[prompt] = real
        rows = [features[p] for p in prompts]
        length = max(1, *(r.shape[0] for r in rows))
        k, e = rows[0].shape[1:]
        device = encoder.device
        out = torch.zeros(len(rows), length, k, e, dtype=rows[0].dtype, device=device)
        mask_out = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
        for i, r in enumerate(rows):
            out[i, : r.shape[0]] = r.to(device)
            mask_out[i, : r.shape[0]] = True
        return out, mask_out

    def _path(self, prompt: str, encoder: TextEncoder, *, max_length: int) -> Path:
        key = self.key(prompt, encoder, max_length=max_length)
        # Two-level fan-out keeps directories small at millions of prompts.
        return self.directory / key[:2] / f"{key}.safetensors"

    def _read(self, prompt: str, encoder: TextEncoder, *, max_length: int) -> Tensor | None:
        path = self._path(prompt, encoder, max_length=max_length)
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            expected = _metadata(prompt, encoder, max_length)
            if any(meta.get(k) != v for k, v in expected.items()):
                return None
            return f.get_tensor("hidden")

    def _write(self, prompt: str, encoder: TextEncoder, hidden: Tensor, *, max_length: int) -> None:
        path = self._path(prompt, encoder, max_length=max_length)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(
                {"hidden": hidden.detach().to("cpu").contiguous()},
                tmp,
                metadata=_metadata(prompt, encoder, max_length),
            )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def _metadata(prompt: str, encoder: TextEncoder, max_length: int) -> dict[str, str]:
    return {"prompt": prompt, "encoder": encoder.fingerprint, "max_length": str(max_length)}


def encode_cached(
    encoder: TextEncoder,
    prompts: list[str],
    *,
    max_length: int,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[Float[Tensor, "b l k e"], Bool[Tensor, "b l"]]:
    """Encode prompts, reading and filling a `TextFeatureCache` at `cache_dir` (None: no cache).

    Args:
        encoder: the frozen encoder.
        prompts: the texts.
        max_length: longest token sequence kept.
        cache_dir: cache directory, or None to always run the encoder.

    Returns:
        hidden `[b, l, k, e]` and mask `[b, l]` as `TextEncoder.encode` gives them.
    """
    if cache_dir is None:
        return encoder.encode(prompts, max_length=max_length)
    return TextFeatureCache(cache_dir).encode(encoder, prompts, max_length=max_length)
