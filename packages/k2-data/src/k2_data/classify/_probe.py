"""A linear probe on frozen embeddings: fitted with scikit-learn, applied with numpy."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float


@dataclass(frozen=True, kw_only=True)
class LinearProbe:
    """Softmax regression `p(c | x) = softmax(W x + b)_c` over `classes`.

    Args:
        weight: (K, D) float32 class weights.
        bias: (K,) float32 class biases.
        classes: the K class names, in row order.
    """

    weight: Float[np.ndarray, "k d"]
    bias: Float[np.ndarray, " k"]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        k = len(self.classes)
        if k < 2 or self.weight.shape[0] != k or self.bias.shape != (k,):
            raise ValueError(
                f"weight {self.weight.shape} and bias {self.bias.shape} must have one row per "
                f"class ({k} classes, at least 2)"
            )

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def logits(self, x: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "n k"]:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected embeddings (n, {self.dim}), got {x.shape}")
        return x.astype(np.float32, copy=False) @ self.weight.T + self.bias

    def probabilities(self, x: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "n k"]:
        """Class probabilities (a numerically stable softmax of the logits)."""
        z = self.logits(x)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def score(self, x: Float[np.ndarray, "n d"], cls: str) -> Float[np.ndarray, " n"]:
        """The probability of one class (the filter's score)."""
        if cls not in self.classes:
            raise ValueError(f"{cls!r} is not one of the probe's classes {self.classes}")
        return self.probabilities(x)[:, self.classes.index(cls)]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a safetensors file (weights, with the class names in its metadata)."""
        from safetensors.numpy import save_file

        save_file(
            {"weight": np.ascontiguousarray(self.weight), "bias": self.bias},
            str(path),
            metadata={"classes": json.dumps(list(self.classes))},
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearProbe:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            classes = tuple(json.loads(f.metadata()["classes"]))
            return cls(weight=f.get_tensor("weight"), bias=f.get_tensor("bias"), classes=classes)


def fit_linear_probe(
    embeddings: Float[np.ndarray, "n d"],
    labels: Sequence[str],
    *,
    c: float = 1.0,
    balanced: bool = True,
    max_iter: int = 2000,
) -> LinearProbe:
    """Fit an L2-regularised logistic regression (scikit-learn, lbfgs) on embeddings.

    Args:
        embeddings: one row per labelled image (L2-normalised SigLIP-2 / DINOv3 features).
        labels: one class name per row (at least two distinct classes).
        c: inverse regularisation strength.
        balanced: weight classes inversely to their frequency (rare artefacts stay visible).
        max_iter: lbfgs iterations.

    Returns:
        A `LinearProbe` whose probabilities equal scikit-learn's `predict_proba`.

    References:
        Krea 2 report, Data: "train a small DINOv3- or SigLIP-2-based classifier".
    """
    from sklearn.linear_model import LogisticRegression

    if len(labels) != embeddings.shape[0]:
        raise ValueError(f"got {embeddings.shape[0]} embeddings but {len(labels)} labels")
    if len(set(labels)) < 2:
        raise ValueError(
            f"need at least two classes to fit a probe, got {sorted(set(labels))}; label more "
            "images or change the task so both answers occur"
        )
    model = LogisticRegression(
        C=c, class_weight="balanced" if balanced else None, max_iter=max_iter
    )
    model.fit(embeddings.astype(np.float64), np.asarray(labels))
    weight, bias = model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
    if weight.shape[0] == 1:
        # Binary sklearn keeps one row z for classes_[1]: logits (0, z) give sigmoid(z).
        weight = np.concatenate([np.zeros_like(weight), weight])
        bias = np.concatenate([np.zeros_like(bias), bias])
    return LinearProbe(weight=weight, bias=bias, classes=tuple(str(c) for c in model.classes_))
