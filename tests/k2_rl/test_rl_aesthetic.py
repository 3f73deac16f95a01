"""k2_rl.rewards: the Bradley-Terry aesthetic head and the artifact classifier."""

from __future__ import annotations

import math

import pytest
import torch

from k2_rl.rewards import (
    AestheticHeadConfig,
    ArtifactClassifier,
    EmbeddingArtifactClassifier,
    LogisticArtifactHead,
    bradley_terry_loss,
    fit_artifact_head,
    fit_bradley_terry,
    preference_accuracy,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These fits run hundreds of steps on tiny tensors: a second OpenMP thread only adds
    # synchronisation cost (and stalls badly when the 2-core machine is shared).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ref_bt_nll(sw: float, sl: float) -> float:
    # -log P(w beats l), P = exp(sw) / (exp(sw) + exp(sl)) (Bradley & Terry 1952 with π = e^s).
    return -math.log(math.exp(sw) / (math.exp(sw) + math.exp(sl)))


def test_bradley_terry_loss_matches_reference_and_properties():
    g = torch.Generator().manual_seed(0)
    sw, sl = (
        torch.randn(7, generator=g, dtype=torch.float64) * 3,
        torch.randn(7, generator=g, dtype=torch.float64) * 3,
    )
    got = bradley_terry_loss(sw, sl)
    want = [ref_bt_nll(a, b) for a, b in zip(sw.tolist(), sl.tolist(), strict=True)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))
    # Equal scores give log 2; a shift of both scores changes nothing; huge gaps stay finite.
    torch.testing.assert_close(bradley_terry_loss(sw, sw), torch.full_like(sw, math.log(2)))
    torch.testing.assert_close(bradley_terry_loss(sw + 5, sl + 5), got)
    big = bradley_terry_loss(torch.tensor([-500.0, 500.0]), torch.tensor([500.0, -500.0]))
    assert torch.isfinite(big).all() and big[0] == pytest.approx(1000.0) and big[1] == 0
    torch.autograd.gradcheck(bradley_terry_loss, (sw.requires_grad_(), sl.requires_grad_()))


def _planted_pairs(n: int, dim: int, seed: int, direction: torch.Tensor):
    """Pairs whose winner is drawn from Bradley-Terry on the score 4·u·x (u a unit vector)."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
    p_a = torch.sigmoid(4.0 * (a - b) @ direction)
    a_wins = torch.rand(n, generator=g) < p_a
    w = torch.where(a_wins[:, None], a, b)
    lo = torch.where(a_wins[:, None], b, a)
    # Held-out accuracy is measured against the planted order, not the noisy labels.
    truth_w = torch.where(((a - b) @ direction > 0)[:, None], a, b)
    truth_l = torch.where(((a - b) @ direction > 0)[:, None], b, a)
    return w, lo, truth_w, truth_l


@pytest.mark.parametrize("hidden", [0, 32])
def test_fit_bradley_terry_recovers_a_planted_direction(hidden):
    dim = 8
    direction = torch.nn.functional.normalize(
        torch.randn(dim, generator=torch.Generator().manual_seed(1)), dim=0
    )
    w, lo, _, _ = _planted_pairs(800, dim, seed=2, direction=direction)
    head = fit_bradley_terry(w, lo, hidden=hidden, steps=150, lr=1e-2, seed=0)
    _, _, hw, hl = _planted_pairs(500, dim, seed=3, direction=direction)
    assert preference_accuracy(head, hw, hl) > 0.9
    if hidden == 0:
        learned = torch.nn.functional.normalize(head.net[-1].weight.detach()[0], dim=0)
        assert learned @ direction > 0.95


def test_fit_bradley_terry_is_seeded_and_validates():
    w, lo, _, _ = _planted_pairs(64, 4, seed=0, direction=torch.tensor([1.0, 0, 0, 0]))
    state = torch.random.get_rng_state()
    a = fit_bradley_terry(w, lo, hidden=8, steps=5, batch_size=16, seed=3)
    b = fit_bradley_terry(w, lo, hidden=8, steps=5, batch_size=16, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    # The jaxtyping test hook rejects the mismatch before the function's own check.
    with pytest.raises((ValueError, TypeError), match="emb_l"):
        fit_bradley_terry(w, lo[:, :3])
    with pytest.raises(ValueError, match="hidden"):
        AestheticHeadConfig(dim=4, hidden=-1)
    with pytest.raises(ValueError, match="dropout"):
        AestheticHeadConfig(dim=4, dropout=1.0)


def _artifact_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, 8, generator=g, dtype=torch.float64)
    true_w = torch.tensor([2.0, -1.0, 0, 0, 0.5, 0, 0, 0], dtype=torch.float64)
    clean = (
        torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(3 * (emb @ true_w) + 0.5)
    ).double()
    return emb, clean


def test_logistic_artifact_head_is_sigmoid_of_linear():
    head = LogisticArtifactHead(3).double()
    emb = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w, b = head.linear.weight[0].tolist(), head.linear.bias.item()
    want = [
        1 / (1 + math.exp(-(sum(wi * ei for wi, ei in zip(w, e, strict=True)) + b)))
        for e in emb.tolist()
    ]
    torch.testing.assert_close(head(emb), torch.tensor(want, dtype=torch.float64))


def test_fit_artifact_head_reaches_the_regularised_optimum():
    emb, clean = _artifact_data(800, seed=1)
    l2 = 1e-2
    head = fit_artifact_head(emb, clean, l2=l2)
    # Optimality of the convex objective, written out: ∇_w = Xᵀ(p - y)/n + l2·w = 0, ∇_b = mean(p - y) = 0.
    p = head(emb).detach()
    w = head.linear.weight.detach()[0]
    grad_w = emb.T @ (p - clean) / len(clean) + l2 * w
    grad_b = (p - clean).mean()
    assert grad_w.abs().max() < 1e-7 and abs(grad_b) < 1e-7
    test_emb, test_clean = _artifact_data(800, seed=2)
    accuracy = ((head(test_emb) > 0.5).double() == test_clean).double().mean()
    assert accuracy > 0.8
    with pytest.raises((ValueError, TypeError), match="clean"):
        fit_artifact_head(emb, clean[:-1])


def test_embedding_artifact_classifier_composes():
    emb, clean = _artifact_data(200, seed=3)
    head = fit_artifact_head(emb, clean)
    lookup = {i: emb[i] for i in range(len(emb))}
    classifier = EmbeddingArtifactClassifier(
        lambda images: torch.stack([lookup[i] for i in images]), head
    )
    assert isinstance(classifier, ArtifactClassifier)
    got = classifier([5, 0, 7])
    torch.testing.assert_close(got, head(emb[[5, 0, 7]]).detach())
    assert torch.all((got >= 0) & (got <= 1))
