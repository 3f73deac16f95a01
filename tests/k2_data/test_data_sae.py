"""k2_data.sae: TopK SAE forward/loss against float64 loops, gradients, training properties, tags."""

import pyarrow as pa
import pytest
import torch

from k2_data.sae import (
    SAEConfig,
    TopKSAE,
    annotate_features,
    encode_dataset,
    feature_tags,
    filter_by_tags,
    geometric_median,
    predominant_features,
    tag_table,
    top_activating_samples,
    topk_codes,
    topk_sae_loss,
    train_sae,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # these models are tiny: thread hand-offs cost more than the maths on a busy 2-core box
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _params(seed, b=5, d=6, f=10, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=dtype)
    w_enc = torch.randn(f, d, generator=g, dtype=dtype)
    b_enc = 0.1 * torch.randn(f, generator=g, dtype=dtype)
    b_pre = 0.1 * torch.randn(d, generator=g, dtype=dtype)
    w_dec = torch.randn(d, f, generator=g, dtype=dtype)
    w_dec = w_dec / w_dec.norm(dim=0, keepdim=True)
    return x, w_enc, b_enc, b_pre, w_dec


def _reference_loss(x, w_enc, b_enc, b_pre, w_dec, k, dead, k_aux, alpha):
    """Gao et al. 2024 eqs. written as loops over plain Python floats."""
    x, w_enc, b_enc, b_pre, w_dec = (t.tolist() for t in (x, w_enc, b_enc, b_pre, w_dec))
    d, f = len(b_pre), len(b_enc)
    out = []
    for xb in x:
        pre = [sum(w_enc[i][j] * (xb[j] - b_pre[j]) for j in range(d)) + b_enc[i] for i in range(f)]
        top = sorted(range(f), key=lambda i: -pre[i])[:k]
        z = [max(pre[i], 0.0) if i in top else 0.0 for i in range(f)]
        recon = [sum(w_dec[j][i] * z[i] for i in range(f)) + b_pre[j] for j in range(d)]
        e = [xb[j] - recon[j] for j in range(d)]
        mse = sum(v * v for v in e)
        dead_ids = [i for i in range(f) if dead[i]]
        aux = 0.0
        if dead_ids and k_aux > 0:
            chosen = sorted(dead_ids, key=lambda i: -pre[i])[:k_aux]
            za = [max(pre[i], 0.0) if i in chosen else 0.0 for i in range(f)]
            e_hat = [sum(w_dec[j][i] * za[i] for i in range(f)) for j in range(d)]
            aux = sum((e[j] - e_hat[j]) ** 2 for j in range(d))
        out.append((mse + alpha * aux, mse, aux, z))
    return out


@pytest.mark.parametrize(("k", "k_aux", "n_dead"), [(3, 2, 4), (1, 5, 3), (4, 2, 0), (2, 0, 5)])
def test_loss_matches_float64_loops(k, k_aux, n_dead):
    params = _params(k + n_dead)
    dead = torch.zeros(10, dtype=torch.bool)
    dead[torch.randperm(10, generator=torch.Generator().manual_seed(1))[:n_dead]] = True
    total, mse, aux, z = topk_sae_loss(*params, k=k, dead=dead, k_aux=k_aux, aux_coef=0.25)
    ref = _reference_loss(*params, k, dead.tolist(), k_aux, 0.25)
    torch.testing.assert_close(total, torch.tensor([r[0] for r in ref], dtype=torch.float64))
    torch.testing.assert_close(mse, torch.tensor([r[1] for r in ref], dtype=torch.float64))
    torch.testing.assert_close(aux, torch.tensor([r[2] for r in ref], dtype=torch.float64))
    torch.testing.assert_close(z, torch.tensor([r[3] for r in ref], dtype=torch.float64))


def test_gradcheck_reconstruction_loss():
    params = [p.requires_grad_() for p in _params(7, b=3, d=4, f=6)]
    fn = lambda *p: topk_sae_loss(*p, k=2)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-5)


def test_auxk_gradient_treats_residual_as_constant_and_reaches_only_dead_latents():
    x, w_enc, b_enc, b_pre, w_dec = _params(8)
    dead = torch.tensor([False] * 6 + [True] * 4)
    params = [p.clone().requires_grad_() for p in (w_enc, b_enc, b_pre, w_dec)]
    aux = topk_sae_loss(x, *params, k=3, dead=dead, k_aux=2)[2]
    got = torch.autograd.grad(aux.sum(), params)
    # reference: same AuxK formula with the residual e precomputed as a constant
    ref_params = [p.clone().requires_grad_() for p in (w_enc, b_enc, b_pre, w_dec)]
    we, be, bp, wd = ref_params
    with torch.no_grad():
        e = x - topk_codes((x - b_pre) @ w_enc.T + b_enc, 3)[0] @ w_dec.T - b_pre
    pre = (x - bp) @ we.T + be
    pre_dead = torch.where(dead, pre, torch.full_like(pre, -1e30))
    vals, idx = pre_dead.topk(2, dim=-1)
    z_aux = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    ref_aux = ((e - z_aux @ wd.T) ** 2).sum(-1)
    want = torch.autograd.grad(ref_aux.sum(), ref_params)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    assert got[3][:, :6].abs().max() == 0 and got[3][:, 6:].abs().max() > 0


def test_topk_selects_exactly_k_latents():
    pre = torch.randn(64, 40, generator=torch.Generator().manual_seed(0))
    z, values, indices = topk_codes(pre + 10.0, 5)  # all positive: every selected one is active
    assert ((z != 0).sum(1) == 5).all()
    assert all(len(set(row)) == 5 for row in indices.tolist())
    assert (values[:, :-1] >= values[:, 1:]).all()
    z, values, _ = topk_codes(pre - 1.0, 5)  # ReLU: a selected non-positive one is silent
    assert ((z != 0).sum(1) == (values > 0).sum(1)).all() and ((z != 0).sum(1) <= 5).all()


def test_decoder_columns_stay_unit_norm_and_gradient_is_tangent():
    x = torch.randn(512, 8, generator=torch.Generator().manual_seed(0)) + 2.0
    norms = []
    config = SAEConfig(d_in=8, n_latents=32, k=3, k_aux=4, dead_after_steps=3)
    train_sae(
        x, config, steps=25, batch_size=32, lr=1e-2,
        callback=lambda s, m, losses: norms.append(m.w_dec.detach().norm(dim=0)),
    )  # fmt: skip
    assert len(norms) == 25
    torch.testing.assert_close(torch.stack(norms), torch.ones(25, 32))
    model = TopKSAE(config)
    model(x[:16])[0].mean().backward()
    model.remove_parallel_grad_()
    torch.testing.assert_close((model.w_dec.grad * model.w_dec).sum(0), torch.zeros(32))


def _planted_subspace():
    """16 orthonormal atoms spanning half of R^32; each sample mixes 2 with weights in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(32, 32, generator=g))[0]
    atoms, outside = q[:, :16].T, q[:, 16:]
    idx = torch.rand(8000, 16, generator=g).argsort(1)[:, :2]
    x = ((0.5 + torch.rand(8000, 2, generator=g))[..., None] * atoms[idx]).sum(1)
    return x, atoms, outside


def _run_with_planted_dead(aux_coef, seed):
    x, atoms, outside = _planted_subspace()
    config = SAEConfig(d_in=32, n_latents=16, k=2, k_aux=8, aux_coef=aux_coef, dead_after_steps=20)
    model = TopKSAE(config, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # latents 8..15 point almost entirely out of the data's subspace
        inside = torch.randn(8, 16, generator=g) @ atoms
        out = torch.randn(8, 16, generator=g) @ outside.T
        bad = 0.05 * inside / inside.norm(dim=1, keepdim=True) + out / out.norm(dim=1, keepdim=True)
        model.w_dec[:, 8:] = (bad / bad.norm(dim=1, keepdim=True)).T
        model.w_enc[8:] = model.w_dec[:, 8:].T
    dead = []
    model = train_sae(
        x, config, steps=300, batch_size=128, lr=3e-3, seed=seed, model=model,
        callback=lambda s, m, losses: dead.append(int(m.dead.sum())),
    )  # fmt: skip
    recovered = int(((atoms @ model.w_dec.detach()).max(1).values > 0.9).sum())
    return sum(dead) / len(dead), recovered


@pytest.mark.parametrize("seed", [0, 3])
def test_auxk_revives_planted_dead_latents(seed):
    dead_without, atoms_without = _run_with_planted_dead(0.0, seed)
    dead_with, atoms_with = _run_with_planted_dead(1.0 / 32.0, seed)
    assert dead_with < 0.6 * dead_without  # mean number of dead latents over training
    assert atoms_with > atoms_without


def test_recovers_planted_sparse_dictionary():
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(48, 24, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.rand(20000, 48, generator=g).argsort(1)[:, :3]
    x = ((0.5 + torch.rand(20000, 3, generator=g))[..., None] * atoms[idx]).sum(1)
    config = SAEConfig(d_in=24, n_latents=96, k=3, k_aux=12, dead_after_steps=100)
    model = train_sae(x, config, steps=600, batch_size=256, lr=3e-3, seed=0)
    best = (atoms @ model.w_dec.detach()).max(1).values
    assert (best > 0.95).all(), best.min()


def test_geometric_median_of_collinear_points_is_the_middle_one():
    t = torch.tensor([0.0, 1.0, 5.0, 6.0, 100.0], dtype=torch.float64)
    x = torch.stack([t, 2.0 * t], dim=1)
    torch.testing.assert_close(geometric_median(x), torch.tensor([5.0, 10.0], dtype=torch.float64), atol=1e-3, rtol=0)  # fmt: skip


# ---------------------------------------------------------------- features as tags


def test_top_activating_samples_match_brute_force():
    g = torch.Generator().manual_seed(1)
    values = torch.rand(50, 3, generator=g).sort(1, descending=True).values
    values[values < 0.2] = 0.0
    indices = torch.stack([torch.randperm(12, generator=g)[:3] for _ in range(50)])
    samples, acts = top_activating_samples(values, indices, n_latents=12, n_top=4)
    for f in range(12):
        hits = [(v, s) for s in range(50) for v, i in zip(values[s].tolist(), indices[s].tolist(), strict=True) if i == f and v > 0]  # fmt: skip
        hits.sort(key=lambda p: (-p[0], p[1]))
        want = [s for _, s in hits[:4]] + [-1] * (4 - min(4, len(hits)))
        assert samples[f].tolist() == want
        torch.testing.assert_close(acts[f, : len(hits[:4])], torch.tensor([v for v, _ in hits[:4]]))


def test_naming_hook_tags_and_filter():
    values = torch.tensor([[0.9, 0.3, 0.0], [0.5, 0.4, 0.1], [0.8, 0.05, 0.01]])
    indices = torch.tensor([[2, 0, 1], [0, 1, 2], [1, 2, 0]])
    feats = predominant_features(values, indices, n_tags=2, min_share=0.1)
    assert feats.tolist() == [[2, 0], [0, 1], [1, -1]]  # 0.05 / 0.86 < 0.1
    samples, _ = top_activating_samples(values, indices, n_latents=4, n_top=2)
    keys = ["a", "b", "c"]
    seen = {}

    def hook(feature, top):
        seen[feature] = top
        return {0: "sky", 2: "jpeg artifacts"}.get(feature)  # feature 1: not interpretable

    names = annotate_features(samples, hook, keys=keys)
    assert names == {0: "sky", 2: "jpeg artifacts"}
    assert seen == {0: ["b", "a"], 1: ["c", "b"], 2: ["a", "b"]}  # feature 3 never fired
    tags = feature_tags(feats, names)
    assert tags == [["jpeg artifacts", "sky"], ["sky"], []]
    assert filter_by_tags(tags, {"jpeg artifacts"}).tolist() == [False, True, True]
    table = tag_table(keys, feats, names)
    assert table.column("sae_features").to_pylist() == [[2, 0], [0, 1], [1]]
    assert isinstance(table, pa.Table) and table.column("sae_tags").to_pylist() == tags


def test_encode_dataset_batches_like_one_call():
    model = TopKSAE(SAEConfig(d_in=8, n_latents=20, k=4))
    x = torch.randn(37, 8, generator=torch.Generator().manual_seed(2))
    v, i = encode_dataset(model, x, batch_size=10)
    v1, i1 = model.encode(x)
    torch.testing.assert_close(v, v1.detach())
    assert torch.equal(i, i1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SAEConfig(d_in=8, n_latents=4, k=5),
        lambda: SAEConfig(d_in=0, n_latents=4, k=1),
        lambda: SAEConfig(d_in=8, n_latents=4, k=1, dead_after_steps=0),
        lambda: train_sae(torch.randn(4, 3), SAEConfig(d_in=8, n_latents=4, k=1), steps=1),
        lambda: predominant_features(
            torch.rand(2, 3), torch.zeros(2, 3, dtype=torch.long), n_tags=4
        ),
    ],
)
def test_bad_input_raises_clearly(make):
    with pytest.raises(ValueError):
        make()
