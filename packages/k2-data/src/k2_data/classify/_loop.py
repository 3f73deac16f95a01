"""The report's pseudo-label loop: VLM labels a sample -> probe on embeddings -> calibrated filter."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
from jaxtyping import Bool, Float

from k2_data.classify._calibrate import Calibration, calibrate_threshold
from k2_data.classify._probe import LinearProbe, fit_linear_probe
from k2_data.classify._tasks import LabelTask, parse_label
from k2_data.hashing import ImageBatch

VLMFn = Callable[..., Sequence[str]]
"""(images, prompts, system_prompt=...) -> replies; a `VLMGenerator` or a stub."""


def pseudo_label(
    vlm: VLMFn, images: ImageBatch, task: LabelTask, *, batch_size: int = 64
) -> list[str | None]:
    """Ask the VLM the task's question about each image and parse the replies into classes.

    Args:
        vlm: (images, prompts, system_prompt=) -> one reply per image.
        images: the sample to label.
        task: system prompt, question and answer classes.
        batch_size: images per VLM call.

    Returns:
        One class name per image, or None where the reply named no class.
    """
    labels: list[str | None] = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        replies = vlm(batch, [task.question] * len(batch), system_prompt=task.system_prompt)
        if len(replies) != len(batch):
            raise ValueError(f"the VLM returned {len(replies)} replies for {len(batch)} images")
        labels.extend(parse_label(r, task.classes) for r in replies)
    return labels


def stratified_split(
    labels: Sequence[str], *, holdout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) row indices with every class split in the same proportion."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    rng = np.random.default_rng(seed)
    array = np.asarray(labels)
    train, hold = [], []
    for cls in sorted(set(labels)):
        rows = rng.permutation(np.flatnonzero(array == cls))
        cut = round(len(rows) * holdout_fraction)
        hold.append(rows[:cut])
        train.append(rows[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(hold))


@dataclass(frozen=True, kw_only=True)
class EmbeddingFilter:
    """A trained, calibrated filter: flag an image when P(positive | embedding) >= threshold.

    Args:
        task: the task's name.
        positive: the flagged class.
        probe: the linear probe.
        calibration: the held-out threshold and its precision / recall.
        num_labelled: images the VLM was asked about.
        num_unparsed: replies that named no class (left out of training).
    """

    task: str
    positive: str
    probe: LinearProbe
    calibration: Calibration
    num_labelled: int
    num_unparsed: int

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def scores(self, embeddings: Float[np.ndarray, "n d"]) -> Float[np.ndarray, " n"]:
        return self.probe.score(embeddings, self.positive)

    def flags(self, embeddings: Float[np.ndarray, "n d"]) -> Bool[np.ndarray, " n"]:
        return self.scores(embeddings) >= self.threshold

    def save(self, path: str | os.PathLike[str]) -> None:
        """The probe as `path` (safetensors) and everything else as `path` + '.json'."""
        self.probe.save(path)
        meta = {k: v for k, v in asdict(self).items() if k not in ("probe", "calibration")}
        meta["calibration"] = asdict(self.calibration)
        with open(f"{os.fspath(path)}.json", "w") as f:
            json.dump(meta, f, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EmbeddingFilter:
        with open(f"{os.fspath(path)}.json") as f:
            meta = json.load(f)
        meta["calibration"] = Calibration(**meta["calibration"])
        return cls(probe=LinearProbe.load(path), **meta)


def train_filter(
    embeddings: Float[np.ndarray, "n d"],
    labels: Sequence[str | None],
    task: LabelTask,
    *,
    holdout_fraction: float = 0.3,
    target_precision: float = 0.95,
    confidence: float = 0.95,
    min_flagged: int = 5,
    c: float = 1.0,
    seed: int = 0,
) -> EmbeddingFilter:
    """Fit a probe on pseudo-labels and calibrate its threshold on a held-out split.

    Args:
        embeddings: one row per labelled image.
        labels: `pseudo_label` output (None rows are dropped and counted).
        task: gives the classes and the positive (flagged) one.
        holdout_fraction: share of each class held out for calibration.
        target_precision: precision the flagged set must reach on the held-out split.
        confidence: confidence of the Wilson lower bound held to the target (0: raw precision).
        min_flagged: smallest held-out flagged set that may set the threshold.
        c: inverse L2 strength of the probe.
        seed: the split's seed.

    Returns:
        An `EmbeddingFilter`.

    References:
        Krea 2 report, Data: VLM pseudo-labels, then "a small DINOv3- or SigLIP-2-based
        classifier to run the filter at scale".
    """
    if len(labels) != embeddings.shape[0]:
        raise ValueError(f"got {embeddings.shape[0]} embeddings but {len(labels)} labels")
    keep = [i for i, label in enumerate(labels) if label is not None]
    names = [labels[i] for i in keep]
    if task.positive not in names:
        raise ValueError(
            f"no image was labelled {task.positive!r}: the sample has no positives, so the "
            "filter cannot be trained; label a larger or enriched sample"
        )
    x = embeddings[keep]
    train, hold = stratified_split(names, holdout_fraction=holdout_fraction, seed=seed)
    probe = fit_linear_probe(x[train], [names[i] for i in train], c=c)
    positive = np.asarray([names[i] == task.positive for i in hold])
    calibration = calibrate_threshold(
        probe.score(x[hold], task.positive),
        positive,
        target_precision=target_precision,
        confidence=confidence,
        min_flagged=min_flagged,
    )
    return EmbeddingFilter(
        task=task.name,
        positive=task.positive,
        probe=probe,
        calibration=calibration,
        num_labelled=len(labels),
        num_unparsed=len(labels) - len(keep),
    )


def apply_filter(
    flt: EmbeddingFilter, batches: Iterable[tuple[Sequence[str], np.ndarray]]
) -> pa.Table:
    """Score embeddings at scale, batch by batch (e.g. `EmbeddingCache.iter_batches()`).

    Args:
        flt: the trained filter.
        batches: (keys, (B, D) embeddings) pairs.

    Returns:
        A table with `__key__`, `<task>_score` (float32) and `<task>_flag` (bool).
    """
    keys: list[str] = []
    scores: list[np.ndarray] = []
    for batch_keys, emb in batches:
        if len(batch_keys) != emb.shape[0]:
            raise ValueError(f"a batch has {len(batch_keys)} keys but {emb.shape[0]} embeddings")
        keys.extend(batch_keys)
        scores.append(flt.scores(emb).astype(np.float32))
    score = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    return pa.table(
        {
            "__key__": pa.array(keys, pa.string()),
            f"{flt.task}_score": score,
            f"{flt.task}_flag": score >= flt.threshold,
        }
    )
