"""`k2 curate`: the smoke curation end to end, the fault builders, and the hook into pretraining.

The expectations below are written from the fault definitions (what each fault is and which
rule must catch it), not read back from the curation's own tables: the tables are checked
against independent recounts of the manifest and of the shard tars.
"""

import io
import json
import shutil
import tarfile
from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from k2_data.filters import border_widths
from k2_data.synthetic import render, sample_scenes
from k2_recipes.curate import (
    CURATE_PRESETS,
    ClusterSettings,
    CurateConfig,
    FaultCounts,
    plan_layout,
    run_curate,
    write_curate_page,
)
from k2_recipes.curate._faults import (
    Slot,
    corrupt_file,
    encode_jpeg,
    flat_border,
    near_duplicate,
    noise_image,
)
from k2_recipes.presets import PRETRAIN_PRESETS
from k2_recipes.rundir import RunDir
from k2_recipes.world import build_training_set, scene_prompts, world_config

SMOKE = CURATE_PRESETS["smoke"]


def _popcount(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke curation (600 clean scenes + 62 faults), on a 2-process pool like `tiny`."""
    path = tmp_path_factory.mktemp("curate")
    run = RunDir(path)
    try:
        result = run_curate(replace(SMOKE, workers=2), run)
    finally:
        run.close()
    return result, path


def _rows(result):
    return result.manifest.to_pylist()


def test_every_sample_in_the_shards_is_accounted_for_once(smoke):
    result, path = smoke
    keys_in_tars = []
    for shard in sorted((path / "curate" / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            names = [m.name for m in tar.getmembers()]
        stems = Counter(n.split(".", 1)[0] for n in names)
        assert set(stems.values()) == {3}, "every sample is jpg + txt + json"
        keys_in_tars += list(dict.fromkeys(n.split(".", 1)[0] for n in names))
    manifest_keys = result.manifest["__key__"].to_pylist()
    assert len(manifest_keys) == len(set(manifest_keys))
    assert sorted(manifest_keys) == sorted(keys_in_tars)
    assert len(keys_in_tars) == SMOKE.world.train_scenes + SMOKE.faults.total
    kinds = Counter(r["kind"] for r in _rows(result))
    assert kinds == {
        "clean": SMOKE.world.train_scenes,
        "near_duplicate": SMOKE.faults.near_duplicate,
        "flat_border": SMOKE.faults.flat_border,
        "noise": SMOKE.faults.noise,
        "corrupt": SMOKE.faults.corrupt,
    }
    for row in _rows(result):
        assert row["keep"] == (row["reason"] == ""), row


def test_flat_border_noise_and_corrupt_faults_are_dropped_for_their_reason(smoke):
    result, _ = smoke
    want = {
        "flat_border": ("border_fraction>",),
        "noise": ("laplacian_var>", "complexity>"),
        "truncated": ("broken_file: truncated",),
        "zero_byte": ("broken_file: empty",),
        "not_an_image": ("broken_file: not_an_image",),
    }
    seen = Counter()
    for row in _rows(result):
        if row["kind"] in ("flat_border", "noise", "corrupt"):
            prefixes = want.get(row["variant"], want.get(row["kind"]))
            assert not row["keep"] and row["reason"].startswith(prefixes), row
            seen[row["variant"]] += 1
    assert set(seen) == {
        "corner_thumbnail",
        "uniform",
        "gaussian",
        "truncated",
        "zero_byte",
        "not_an_image",
    }


def test_near_duplicates_are_caught_by_dedup_or_lie_outside_the_hash_radii(smoke):
    result, path = smoke
    tier = pq.read_table(path / "curate" / "dedup.parquet")
    assert tier.num_rows == result.manifest.num_rows
    hashes = {}
    for part in sorted((path / "curate" / "cpu_tier").glob("*.parquet")):
        t = pq.read_table(part, columns=["__key__", "phash", "colorhash"])
        for k, p, c in zip(*(t[n].to_pylist() for n in t.column_names), strict=True):
            hashes[k] = (p, c)
    rows = {r["__key__"]: r for r in _rows(result)}
    caught = missed = 0
    for row in rows.values():
        if row["kind"] != "near_duplicate":
            continue
        source = rows[row["source"]]
        assert source["kind"] == "clean" and source["__key__"] < row["__key__"]
        if row["variant"] == "exact":
            assert not row["keep"]
        if not row["keep"]:
            # Only the dedup step may drop a copy of a clean scene, never a filter.
            assert row["reason"].split(":", 1)[0] in ("duplicate_of", "md5_duplicate_of")
            assert rows[row["keeper"]]["keep"]
            caught += 1
            continue
        # A copy that survived: its source passed the filters, so had the copy been within
        # both radii of it the two would share a group and only one would be kept.
        (p1, c1), (p2, c2) = hashes[row["__key__"]], hashes[source["__key__"]]
        assert _popcount(p1, p2) > SMOKE.phash_radius or _popcount(c1, c2) > SMOKE.colorhash_radius
        missed += 1
    assert caught + missed == SMOKE.faults.near_duplicate and caught > missed


def test_clean_scenes_are_only_ever_dropped_as_duplicates_of_a_kept_sample(smoke):
    result, _ = smoke
    rows = {r["__key__"]: r for r in _rows(result)}
    for row in rows.values():
        if row["kind"] == "clean" and not row["keep"]:
            assert row["stage"] == "dedup", row
            keeper = rows[row["keeper"]]
            assert keeper["keep"] and keeper["kind"] in ("clean", "near_duplicate")
    clean_dropped = sum(r["kind"] == "clean" and not r["keep"] for r in rows.values())
    assert sum(r["clean scenes"] for r in result.clean_drop_rows) == clean_dropped
    assert result.catch["clean_dropped"] == clean_dropped


def test_reported_counts_match_a_recount_of_the_manifest(smoke):
    result, _ = smoke
    rows = _rows(result)
    faults = [r for r in rows if r["kind"] != "clean"]
    dropped = [r for r in rows if not r["keep"]]
    fault_dropped = [r for r in faults if not r["keep"]]
    assert result.catch["faults"] == len(faults) == SMOKE.faults.total
    assert result.catch["faults_dropped"] == len(fault_dropped)
    assert result.catch["precision"] == pytest.approx(len(fault_dropped) / len(dropped))
    assert result.catch["recall"] == pytest.approx(len(fault_dropped) / len(faults))
    clean_layouts = {r["layout"] for r in rows if r["kind"] == "clean"}
    shown = clean_layouts & {r["layout"] for r in rows if r["keep"]}
    assert (result.catch["clean_layouts"], result.catch["kept_layouts"]) == (
        len(clean_layouts),
        len(shown),
    )
    by_variant = Counter((r["kind"], r["variant"] or "-") for r in rows)
    dropped_by_variant = Counter((r["kind"], r["variant"] or "-") for r in dropped)
    for table_row in result.fault_rows:
        key = (table_row["kind"], table_row["variant"])
        assert table_row["injected"] == by_variant[key]
        assert table_row["dropped"] == dropped_by_variant[key]
        assert table_row["kept"] == by_variant[key] - dropped_by_variant[key]
    assert sum(r["dropped"] for r in result.drop_rows) == len(dropped)
    groups = Counter(r["keeper"] for r in rows if r["keeper"] is not None)
    assert result.groups["groups"] == sum(n > 1 for n in groups.values())
    assert sum(r["groups"] for r in result.groups["size_histogram"]) == result.groups["groups"]
    assert result.groups["largest"] == max(groups.values())


def test_pretraining_scenes_are_the_kept_samples_scenes(smoke):
    result, _ = smoke
    world = world_config(SMOKE.world)
    drawn = sample_scenes(
        SMOKE.world.train_scenes + SMOKE.faults.total, seed=SMOKE.world.seed, config=world
    )
    slots = plan_layout(SMOKE.world.train_scenes, SMOKE.faults, seed=SMOKE.seed)
    kept = [r for r in _rows(result) if r["keep"]]
    assert result.keys == [r["__key__"] for r in kept]
    index = {r["__key__"]: i for i, r in enumerate(_rows(result))}
    for row, scene in zip(kept, result.scenes, strict=True):
        slot = slots[index[row["__key__"]]]
        assert slot.kind in ("clean", "near_duplicate")
        assert scene == drawn[slot.scene]
    clean_kept = {slots[index[r["__key__"]]].scene for r in kept if r["kind"] == "clean"}
    assert len(clean_kept) == sum(r["kind"] == "clean" for r in kept)


def test_outputs_report_and_filtered_shards(smoke):
    result, path = smoke
    out = path / "curate"
    curated = pq.read_table(out / "curated.parquet")
    assert curated["__key__"].to_pylist() == result.keys
    assert pq.read_table(out / "manifest.parquet").num_rows == result.manifest.num_rows
    originals, filtered = {}, {}
    for folder, store in (("shards", originals), ("filtered", filtered)):
        for shard in sorted((out / folder).glob("*.tar")):
            with tarfile.open(shard) as tar:
                for member in tar.getmembers():
                    store[member.name] = tar.extractfile(member).read()
    assert {name.split(".", 1)[0] for name in filtered} == set(result.keys)
    assert all(originals[name] == data for name, data in filtered.items())
    summary = json.loads((path / "curate.json").read_text())
    assert summary["kept"] == len(result.keys)
    page = write_curate_page(result, path / "curate.html", title="curate")
    text = page.read_text()
    for heading in ("Fault catching", "Drops per step and reason", "Duplicate groups"):
        assert heading in text
    assert "Cluster balance" in text and "balanced sample" in text
    balanced = result.manifest.filter(result.manifest["keep"])["balanced_sample"].to_pylist()
    assert sum(balanced) == round(SMOKE.cluster.balanced_fraction * len(result.keys))
    # The top level is water-filled: the largest cap c with sum(min(size, c)) <= target,
    # the leftover units one each to clusters above the cap.
    sizes = [r["kept"] for r in result.balance.top_rows]
    got = [r["balanced sample"] for r in result.balance.top_rows]
    target = sum(balanced)
    cap = max(c for c in range(max(sizes) + 1) if sum(min(x, c) for x in sizes) <= target)
    assert sum(sizes) == len(result.keys) and sum(got) == target
    assert all(min(x, cap) <= g <= min(x, cap + 1) for x, g in zip(sizes, got, strict=True))


def test_rerun_resumes_from_the_finished_shards(smoke, tmp_path):
    result, original = smoke
    path = tmp_path / "copy"
    shutil.copytree(original / "curate", path / "curate")  # copy2 keeps the mtimes
    shards = sorted((path / "curate" / "shards").glob("*.tar"))
    before = {p: p.stat().st_mtime_ns for p in shards}
    run = RunDir(path)
    try:
        again = run_curate(replace(SMOKE, workers=1, write_filtered_shards=False), run)
    finally:
        run.close()
    assert {p: p.stat().st_mtime_ns for p in shards} == before
    assert again.manifest.equals(result.manifest)
    # New thresholds re-decide the saved statistics; the shards stay as they are.
    no_border = replace(SMOKE.thresholds, max_border_fraction=None)
    run = RunDir(path)
    try:
        loose = run_curate(replace(SMOKE, thresholds=no_border, workers=1), run)
    finally:
        run.close()
    assert {p: p.stat().st_mtime_ns for p in shards} == before
    flat = [r for r in loose.manifest.to_pylist() if r["kind"] == "flat_border"]
    assert flat and not any(r["reason"].startswith("border_fraction") for r in flat)
    assert sum(r["keep"] for r in flat) > 0


# ---------------------------------------------------------------------------------------
# The fault builders and the layout.


def test_layout_places_each_fault_once_after_slot_zero_and_copies_earlier_clean_slots():
    faults = FaultCounts(near_duplicate=7, flat_border=3, noise=2, corrupt=4)
    slots = plan_layout(20, faults, seed=3)
    assert slots == plan_layout(20, faults, seed=3)
    assert len(slots) == 36 and slots[0].kind == "clean"
    assert Counter(s.kind for s in slots) == {
        "clean": 20,
        "near_duplicate": 7,
        "flat_border": 3,
        "noise": 2,
        "corrupt": 4,
    }
    assert [s.scene for s in slots if s.kind == "clean"] == list(range(20))
    for i, slot in enumerate(slots):
        if slot.kind == "near_duplicate":
            assert 0 <= slot.source < i and slots[slot.source].kind == "clean"
            assert slot.scene == slots[slot.source].scene
    extra = [s.scene for s in slots if s.kind in ("flat_border", "noise", "corrupt")]
    assert sorted(extra) == list(range(20, 29))
    assert [s.variant for s in slots if s.kind == "corrupt"] == [
        "truncated",
        "zero_byte",
        "not_an_image",
        "truncated",
    ]
    with pytest.raises(ValueError, match="at least one clean scene"):
        plan_layout(0, faults, seed=0)


@pytest.fixture(scope="module")
def source():
    scene = sample_scenes(1, seed=5, config=world_config(SMOKE.world))[0]
    pixels = render(scene, 64)
    return pixels, encode_jpeg(pixels, 90)


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


@pytest.mark.parametrize("seed", range(4))
def test_near_duplicates_never_beat_their_source_under_the_keeper_rule(source, seed):
    _, jpeg = source
    rng = np.random.default_rng(seed)
    assert near_duplicate(jpeg, "exact", rng, quality=90) == jpeg
    for variant in ("reencode", "jitter"):
        copy = near_duplicate(jpeg, variant, np.random.default_rng(seed), quality=90)
        assert _size(copy) == (64, 64) and len(copy) < len(jpeg)
    for variant in ("resize", "crop"):
        copy = near_duplicate(jpeg, variant, np.random.default_rng(seed), quality=90)
        w, h = _size(copy)
        assert w <= 64 and h <= 64 and w * h < 64 * 64
        assert min(w, h) >= (48 if variant == "resize" else 60)
    jittered = np.asarray(
        Image.open(io.BytesIO(near_duplicate(jpeg, "jitter", rng, quality=90))).convert("RGB")
    )
    # A colour cast, not a brightening: the white background (240) stays below 245.
    assert np.median(jittered.reshape(-1, 3).min(axis=1)) < 245
    with pytest.raises(ValueError, match="unknown near-duplicate variant"):
        near_duplicate(jpeg, "mirror", rng, quality=90)


@pytest.mark.parametrize("seed", range(6))
def test_flat_border_covers_over_85_percent_of_two_sides_after_jpeg(source, seed):
    pixels, _ = source
    data = flat_border(pixels, np.random.default_rng(seed), quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    fractions = border_widths(decoded, tolerance=8).fractions()
    assert sorted(fractions.values())[-2] > 0.85
    # Not a white or black canvas: those rules run before the border rule.
    corner = decoded[32, 32]
    assert not (corner >= 245).all() and not (corner <= 10).all()


def test_noise_and_corrupt_files(source):
    _, jpeg = source
    rng = np.random.default_rng(0)
    for variant in ("uniform", "gaussian"):
        pixels = np.asarray(Image.open(io.BytesIO(noise_image(variant, 64, rng, quality=90))))
        assert pixels.shape == (64, 64, 3) and pixels.std() > 40
    cut = corrupt_file("truncated", jpeg, rng)
    assert 0.3 * len(jpeg) <= len(cut) <= 0.8 * len(jpeg) + 1 and jpeg.startswith(cut)
    assert corrupt_file("zero_byte", jpeg, rng) == b""
    assert corrupt_file("not_an_image", jpeg, rng).startswith(b"<!doctype html>")
    with pytest.raises(ValueError, match="unknown noise variant"):
        noise_image("pink", 64, rng, quality=90)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="resolution=8"):
        CurateConfig(resolution=8)
    with pytest.raises(ValueError, match=r"FaultCounts.noise=-1"):
        FaultCounts(noise=-1)
    with pytest.raises(ValueError, match="top_clusters < leaf_clusters"):
        ClusterSettings(leaf_clusters=4, top_clusters=4)
    with pytest.raises(ValueError, match="train_scenes must be >= 1"):
        CurateConfig(world=replace(SMOKE.world, train_scenes=0))
    assert Slot("clean", "", 0, -1, 0).source == -1


# ---------------------------------------------------------------------------------------
# Feeding pretraining.


class _FakeEncoder:
    """Stands in for the frozen text encoder (its path is unchanged by `scenes=`): one token
    per word, the word's length as its feature, so features can be traced back to prompts."""

    def encode(self, prompts, *, max_length):
        import torch

        words = [p.split()[:max_length] for p in prompts]
        length = max(len(w) for w in words)
        hidden = torch.zeros(len(prompts), length, 2, 3)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, w in enumerate(words):
            hidden[i, : len(w)] = torch.tensor([len(x) for x in w], dtype=torch.float32)[
                :, None, None
            ]
            mask[i, : len(w)] = True
        return hidden, mask


def test_build_training_set_trains_on_exactly_the_given_scenes(monkeypatch):
    import k2_recipes.world as world

    corpora = []
    monkeypatch.setattr(
        world,
        "make_text_encoder",
        lambda settings, corpus, *, seed: corpora.append(corpus) or _FakeEncoder(),
    )
    cfg = PRETRAIN_PRESETS["smoke"]
    cfg = replace(cfg, world=replace(cfg.world, train_scenes=40))
    scenes = sample_scenes(7, seed=11, config=world_config(cfg.world), split="train")[::-1]
    data, _ = build_training_set(cfg, show=False, scenes=scenes)
    assert data.prompts == [scene_prompts(s) for s in scenes]
    for resolution, images in data.images.items():
        expected = np.stack([render(s, resolution) for s in scenes]).transpose(0, 3, 1, 2)
        assert np.array_equal(images.numpy(), expected)
    assert corpora == [[p for s in scenes for p in scene_prompts(s)]]
    short = [scene_prompts(s)[2] for s in scenes]
    assert data.mask[:, 2].sum(-1).tolist() == [len(p.split()) for p in short]
    assert data.hidden[:, 2, 0, 0, 0].tolist() == [len(p.split()[0]) for p in short]
    with pytest.raises(ValueError, match="scenes=\\[\\]"):
        build_training_set(cfg, show=False, scenes=[])


def test_demo_pretrains_on_the_curated_scenes(tmp_path, monkeypatch):
    import k2_recipes.demo as demo
    from k2_recipes.curate import kept_scenes
    from k2_recipes.presets import DEMO_PRESETS

    captured = {}

    class Stop(Exception):
        pass

    def fake_pretrain(cfg, run, *, scenes=None):
        captured["scenes"], captured["world"] = scenes, cfg.world
        raise Stop

    monkeypatch.setattr(demo, "run_pretrain", fake_pretrain)
    cfg = DEMO_PRESETS["smoke"]
    pretrain = replace(cfg.pretrain, world=replace(cfg.pretrain.world, train_scenes=48))
    small_faults = FaultCounts(near_duplicate=5, flat_border=2, noise=2, corrupt=3)
    cfg = replace(
        cfg,
        pretrain=pretrain,
        curate=replace(cfg.curate, faults=small_faults, workers=1),
        run_dir=str(tmp_path),
    )
    with pytest.raises(Stop):
        demo.run_demo(cfg, preset="smoke")
    manifest = pq.read_table(tmp_path / "curate" / "manifest.parquet")
    assert manifest.num_rows == 48 + small_faults.total
    _, expected = kept_scenes(manifest, world_config(pretrain.world))
    assert captured["scenes"] == expected and len(expected) > 0
    assert (
        json.loads((tmp_path / "config.json").read_text())["config"]["curate"]["world"][
            "train_scenes"
        ]
        == 48
    )
