"""A resumable on-disk embedding cache: .npy chunks plus a Parquet key index per chunk."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from jaxtyping import Float, Shaped

from k2_data.embed._encoder import l2_normalize
from k2_data.hashing import ImageBatch

_DTYPES = ("float16", "float32")


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)  # readers never see a half-written file


def _save_npy(path: Path, rows: np.ndarray) -> None:
    with path.open("wb") as f:  # a file object: np.save would append .npy to a .tmp name
        np.save(f, rows)


class EmbeddingCache:
    """Embeddings keyed by `__key__`, appended in chunks, read back by key or in batches.

    Layout: `meta.json` (dim, dtype, model), and per chunk `chunk-000007.npy` (rows) and
    `chunk-000007.parquet` (`__key__`, `row`). The Parquet file is written last and is the
    commit marker: a chunk whose index is missing (a crash mid-write) is ignored and
    overwritten. One writer per directory; give each worker its own directory and read
    them together with one `EmbeddingCache` each.

    Args:
        root: the cache directory (created if missing).
        dim: embedding width; must match an existing cache.
        dtype: storage dtype, "float16" (half the disk; plenty for cosine and linear
            probes) or "float32".
        model: name of the encoder; an existing cache made by another model is refused.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, dim: int, dtype: str = "float16", model: str = ""
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {"dim": dim, "dtype": dtype, "model": model}
        meta_file = self.root / "meta.json"
        if meta_file.is_file():
            found = json.loads(meta_file.read_text())
            if found != meta:
                raise ValueError(
                    f"embedding cache {self.root} was written with {found}, not {meta}: "
                    "use another directory for another model, width or dtype"
                )
        else:
            _atomic_write(meta_file, lambda p: p.write_text(json.dumps(meta)))
        self.dim, self.dtype, self.model = dim, dtype, model
        self._index: dict[str, tuple[int, int]] = {}
        self._chunks = sorted(int(p.stem.split("-")[1]) for p in self.root.glob("chunk-*.parquet"))
        for chunk in self._chunks:
            keys = pq.read_table(self._file(chunk, "parquet"), columns=["__key__"])
            for row, key in enumerate(keys.column(0).to_pylist()):
                self._index[key] = (chunk, row)

    def _file(self, chunk: int, ext: str) -> Path:
        return self.root / f"chunk-{chunk:06d}.{ext}"

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The keys (in order) that are not cached yet."""
        return [k for k in keys if k not in self._index]

    def add(self, keys: Sequence[str], embeddings: Shaped[np.ndarray, "n d"]) -> int:
        """Append the rows whose keys are new as one chunk; returns how many were written."""
        embeddings = np.asarray(embeddings)
        if embeddings.shape != (len(keys), self.dim):
            raise ValueError(
                f"expected embeddings of shape ({len(keys)}, {self.dim}) for {len(keys)} keys, "
                f"got {embeddings.shape}"
            )
        if len(set(keys)) != len(keys):
            raise ValueError("keys repeat within one add(); every __key__ must be unique")
        new = [i for i, k in enumerate(keys) if k not in self._index]
        if not new:
            return 0
        chunk = self._chunks[-1] + 1 if self._chunks else 0
        rows = embeddings[new].astype(self.dtype)
        _atomic_write(self._file(chunk, "npy"), lambda p: _save_npy(p, rows))
        table = pa.table({"__key__": [keys[i] for i in new], "row": np.arange(len(new))})
        _atomic_write(self._file(chunk, "parquet"), lambda p: pq.write_table(table, p))
        self._chunks.append(chunk)
        for row, i in enumerate(new):
            self._index[keys[i]] = (chunk, row)
        return len(new)

    def _rows(self, chunk: int) -> np.ndarray:
        return np.load(self._file(chunk, "npy"), mmap_mode="r")

    def get(self, keys: Sequence[str]) -> Float[np.ndarray, "n d"]:
        """The embeddings of `keys`, in order, as float32."""
        absent = self.missing(keys)
        if absent:
            raise KeyError(
                f"{len(absent)} keys are not in the embedding cache {self.root}, e.g. "
                f"{absent[:3]}; embed them first (embed_to_cache)"
            )
        out = np.empty((len(keys), self.dim), np.float32)
        loaded: dict[int, np.ndarray] = {}
        for i, key in enumerate(keys):
            chunk, row = self._index[key]
            if chunk not in loaded:
                loaded[chunk] = self._rows(chunk)
            out[i] = loaded[chunk][row]
        return out

    def keys(self) -> list[str]:
        """All cached keys, in the order they were added."""
        return list(self._index)

    def iter_batches(self, batch_size: int = 65536) -> Iterator[tuple[list[str], np.ndarray]]:
        """(keys, float32 embeddings) over the whole cache, chunk by chunk, at most
        `batch_size` rows at a time (memory-mapped: the cache never has to fit in RAM)."""
        for chunk in self._chunks:
            keys = pq.read_table(self._file(chunk, "parquet")).column("__key__").to_pylist()
            rows = self._rows(chunk)
            for start in range(0, len(keys), batch_size):
                stop = start + batch_size
                yield keys[start:stop], np.asarray(rows[start:stop], np.float32)


def embed_to_cache(
    encoder: Callable[[ImageBatch], torch.Tensor],
    keys: Sequence[str],
    load_images: Callable[[Sequence[str]], ImageBatch],
    cache: EmbeddingCache,
    *,
    batch_size: int = 32,
    normalize: bool = True,
) -> int:
    """Embed the keys the cache lacks, one chunk per batch, so an interrupted run resumes.

    Images are loaded by key only for missing keys (a resumed run decodes nothing twice).

    Args:
        encoder: an `ImageEncoder` (or any images -> (B, D) tensor callable).
        keys: every key that should end up cached.
        load_images: keys -> decoded images, in the same order.
        cache: where the embeddings go.
        batch_size: images per forward pass and per chunk.
        normalize: L2-normalise before storing.

    Returns:
        The number of embeddings computed by this call.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    todo = list(dict.fromkeys(cache.missing(keys)))
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        images = load_images(batch)
        if len(images) != len(batch):
            raise ValueError(f"load_images returned {len(images)} images for {len(batch)} keys")
        out = encoder(images)
        out = l2_normalize(out) if normalize else out
        cache.add(batch, out.float().cpu().numpy())
    return len(todo)
