"""All pairs within a phash radius AND a colorhash radius, by composite pigeonhole keys."""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from jaxtyping import Int64, UInt8

from k2_data.dedup._common import check_codes, unique_pairs
from k2_data.dedup._lsh import band_edges
from k2_data.hashing import hamming

_ROWS = 1 << 20  # rows per chunk when reading bits out of the codes
_CANDIDATES = 1 << 21  # candidate pairs verified at once, bounds the gathered rows
_MAX_WORKERS = 4  # default cap: each worker holds two n-row uint64 buffers
_SAMPLE = 1 << 16  # rows on which the key layouts are costed
_PROBE_KEYS = 12  # keys per layout costed on the sample
_LAYOUTS = ((1, 1), (2, 0), (2, 1), (1, 2), (3, 0), (1, 0), (0, 1), (0, 2), (0, 0))
_CANDIDATE_COST = 4.0  # a verified candidate costs about 4 rows of one key sort (measured)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser in place (wrapping uint64 arithmetic): a 64-bit mixing hash."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _words(codes: np.ndarray) -> np.ndarray:
    """(rows, ceil(nbytes / 8)) native uint64, the code's bits read big-endian (bit 0 = MSB)."""
    padded = np.zeros((len(codes), -(-codes.shape[1] // 8) * 8), np.uint8)
    padded[:, : codes.shape[1]] = codes
    return padded.view(">u8").astype(np.uint64)


def _bit_range(words: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bits [start, stop) of each row as a right-aligned integer (stop - start <= 64)."""
    k, offset, width = start // 64, start % 64, stop - start
    value = words[:, k] << np.uint64(offset) if offset else words[:, k].copy()
    if offset + width > 64:
        value |= words[:, k + 1] >> np.uint64(64 - offset)
    return value >> np.uint64(64 - width)


def _varying_bits(codes: np.ndarray) -> np.ndarray:
    """Bit positions that are not the same in every row (padding and constant bits drop out)."""
    if len(codes) < 2:
        return np.zeros(0, np.int64)
    differ = np.bitwise_or.reduce(codes, axis=0) ^ np.bitwise_and.reduce(codes, axis=0)
    return np.flatnonzero(np.unpackbits(differ, bitorder="big"))


def _bands(positions: np.ndarray, radius: int, per_key: int) -> list[np.ndarray] | None:
    """radius + per_key disjoint bands over the varying bits, or None if there are too few.

    Two codes within the radius differ in at most radius bands, so they agree on at least
    per_key of the radius + per_key bands (pigeonhole). per_key = 0 keys on nothing: with
    m <= radius varying bits every pair is within the radius, so that is the only option.
    """
    if per_key == 0:
        return []
    if len(positions) < radius + per_key:
        return None
    return [positions[a:b] for a, b in band_edges(len(positions), radius + per_key)]


def _band_values(codes: np.ndarray, bands: list[np.ndarray]) -> list[tuple[np.ndarray, int | None]]:
    """For each band, one integer per row for its bits, and its width (None if hashed).

    Bands up to 64 bits are the bits themselves (exact); wider ones are mixed into a 64-bit
    hash, whose rare collisions only add candidates that verification removes.
    """
    n, out, plans = len(codes), [], []
    for positions in bands:
        width = len(positions)
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(positions, breaks)]
        plans.append(
            [(s, min(s + 64, stop)) for start, stop in runs for s in range(start, stop, 64)]
        )
        dtype = next(
            (t for t in (np.uint8, np.uint16, np.uint32) if width <= 8 * t(0).nbytes), None
        )
        out.append((np.empty(n, dtype or np.uint64), width if width <= 64 else None))
    for row in range(0, n, _ROWS):
        words = _words(codes[row : row + _ROWS])  # once per chunk for all bands
        for (values, _), pieces in zip(out, plans, strict=True):
            value, filled = np.zeros(len(words), np.uint64), 0
            for start, stop in pieces:
                bits = _bit_range(words, start, stop)
                if filled + stop - start <= 64:  # still exact: append the bits
                    value = (value << np.uint64(stop - start)) | bits if filled else bits
                    filled += stop - start
                else:
                    value = _mix(_mix(value) ^ bits)
                    filled = 65
            values[row : row + len(words)] = value
    return out


def _fingerprints(*codes: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of the codes, equal for identical rows."""
    out = np.zeros(len(codes[0]), np.uint64)
    for c in codes:
        for row in range(0, len(c), _ROWS):
            words = _words(c[row : row + _ROWS])
            part = out[row : row + len(words)]
            for k in range(words.shape[1]):
                part ^= words[:, k]
                _mix(part)
    return out


def _sorted_keys(parts: list[tuple[np.ndarray, int | None]], out: np.ndarray) -> int:
    """Fill ``out`` with the sorted composite keys (high bits) and row numbers (low bits).

    The band values are packed exactly when they fit beside the row number, else hashed;
    returns the number of low bits that hold the row.
    """
    n = len(out)
    idx_bits = max(1, (n - 1).bit_length())
    widths = [w for _, w in parts]
    out[:] = 0
    if None not in widths and sum(widths) <= 64 - idx_bits:
        for values, width in parts:
            if width:
                out <<= np.uint64(width)
                out |= values
        out <<= np.uint64(idx_bits)
    else:  # too wide to pack exactly: hash; collisions only add candidates
        for t, (values, _) in enumerate(parts):
            out ^= values
            out += np.uint64(t + 1)  # the same value in two bands must not cancel
            _mix(out)
        out &= ~np.uint64((1 << idx_bits) - 1)
    for row in range(0, n, _ROWS):  # row numbers in chunks: no n-row temporary
        out[row : row + _ROWS] |= np.arange(row, min(n, row + _ROWS), dtype=np.uint64)
    out.sort()
    return idx_bits


def _later(same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions p with an equal key after them, and how many follow in p's run.

    ``same[p]`` says sorted keys p and p + 1 are equal; a run of L equal keys is L - 1
    consecutive True, and its position x (from 0) pairs with the L - 1 - x after it.
    """
    pos = np.flatnonzero(same)
    first = np.r_[True, np.diff(pos) != 1] if len(pos) else np.zeros(0, bool)
    run_start = np.flatnonzero(first)
    run_len = np.diff(np.r_[run_start, len(pos)]) + 1  # keys in the run
    end = np.repeat(pos[run_start] + run_len, run_len - 1)
    return pos, end - pos - 1


def _candidates(pos: np.ndarray, later: np.ndarray, budget: int):
    """Every (p, q) with p < q in one equal-key run, in chunks of about ``budget`` pairs."""
    total = np.cumsum(later)
    cuts = np.searchsorted(total, np.arange(budget, total[-1] if len(total) else 0, budget))
    for lo, hi in itertools.pairwise([0, *np.unique(cuts + 1).tolist(), len(pos)]):
        count = later[lo:hi]
        if hi <= lo or not count.sum():
            continue
        p = np.repeat(pos[lo:hi], count)
        step = np.arange(len(p)) - np.repeat(np.cumsum(count) - count, count) + 1
        yield p, p + step


class _Layout:
    """Bands of both codes and the composite keys built from them."""

    def __init__(self, p_bands, c_bands, per_key):
        self.p_bands, self.c_bands, self.per_key = p_bands, c_bands, per_key
        self.keys = list(
            itertools.product(
                itertools.combinations(range(len(p_bands)), per_key[0]),
                itertools.combinations(range(len(c_bands)), per_key[1]),
            )
        )


def _layouts(phash, colorhash, radii, key_bands) -> list[_Layout]:
    p_bits, c_bits = _varying_bits(phash), _varying_bits(colorhash)
    out = []
    for tp, tc in [key_bands] if key_bands is not None else _LAYOUTS:
        p_bands, c_bands = _bands(p_bits, radii[0], tp), _bands(c_bits, radii[1], tc)
        if p_bands is not None and c_bands is not None:
            out.append(_Layout(p_bands, c_bands, (tp, tc)))
    if not out:
        raise ValueError(
            f"key_bands={key_bands} needs radius + bands varying bits in each code "
            f"(phash has {len(p_bits)}, colorhash {len(c_bits)}); pass key_bands=None"
        )
    return out


def _choose(layouts: list[_Layout], phash, colorhash) -> _Layout:
    """The layout with the least estimated work: key sorts plus candidates, from a sample."""
    if len(layouts) == 1:
        return layouts[0]
    n = len(phash)
    sample = np.random.default_rng(0).choice(n, min(n, _SAMPLE), replace=False)
    sample.sort()
    sp, sc = phash[sample], colorhash[sample]
    scale = n * (n - 1) / max(1, len(sample) * (len(sample) - 1))
    buffer = np.empty(len(sample), np.uint64)
    best, best_cost = layouts[0], float("inf")
    for layout in layouts:
        pv, cv = _band_values(sp, layout.p_bands), _band_values(sc, layout.c_bands)
        probe = layout.keys[:: max(1, len(layout.keys) // _PROBE_KEYS)]
        pairs = 0
        for p_key, c_key in probe:
            parts = [pv[b] for b in p_key] + [cv[b] for b in c_key]
            idx_bits = _sorted_keys(parts, buffer)
            same = (buffer[1:] ^ buffer[:-1]) < np.uint64(1 << idx_bits)
            pairs += int(_later(same)[1].sum())
        candidates = pairs / len(probe) * len(layout.keys) * scale
        cost = len(layout.keys) * n + _CANDIDATE_COST * candidates
        if cost < best_cost:
            best, best_cost = layout, cost
    return best


class _Search:
    """Shared state of one search: codes, band values, and per-thread sort buffers."""

    def __init__(self, phash, colorhash, radii, layout: _Layout):
        self.phash, self.colorhash, self.radii = phash, colorhash, radii
        self.p_values = _band_values(phash, layout.p_bands)
        self.c_values = _band_values(colorhash, layout.c_bands)
        self.local = threading.local()

    def key_pairs(self, p_key: tuple[int, ...], c_key: tuple[int, ...]) -> np.ndarray:
        """Verified pairs whose first agreeing bands are p_key (phash) and c_key (colorhash).

        A pair may share several keys; reporting it only under the first one (its lowest
        agreeing bands in each code) makes each pair come out exactly once.
        """
        n = len(self.phash)
        if not hasattr(self.local, "keys"):  # reused across keys: no page faults per key
            self.local.keys = np.empty(n, np.uint64)
            self.local.xor = np.empty(n - 1, np.uint64)
        keys, xor = self.local.keys, self.local.xor
        parts = [self.p_values[b] for b in p_key] + [self.c_values[b] for b in c_key]
        idx_bits = _sorted_keys(parts, keys)
        np.bitwise_xor(keys[1:], keys[:-1], out=xor)
        same = xor < np.uint64(1 << idx_bits)  # same key, different rows
        mask = np.uint64((1 << idx_bits) - 1)
        out = [np.zeros((0, 2), np.int64)]
        for p, q in _candidates(*_later(same), _CANDIDATES):
            a = (keys[p] & mask).astype(np.int64)
            b = (keys[q] & mask).astype(np.int64)
            out.append(self._verify(a, b, p_key, c_key))
        return np.concatenate(out)

    def _verify(self, a, b, p_key, c_key) -> np.ndarray:
        ok = hamming(self.phash[a], self.phash[b]) <= self.radii[0]
        a, b = a[ok], b[ok]
        ok = hamming(self.colorhash[a], self.colorhash[b]) <= self.radii[1]
        a, b = a[ok], b[ok]
        ok = np.ones(len(a), bool)
        for values, key in ((self.p_values, p_key), (self.c_values, c_key)):
            for band in range(max(key, default=-1) + 1):  # key bands agree, earlier ones not
                agree = values[band][0][a] == values[band][0][b]
                ok &= agree if band in key else ~agree
        return np.stack([a[ok], b[ok]], axis=1)


def _expand(pairs: np.ndarray, rep: np.ndarray) -> np.ndarray:
    """Pairs among group representatives -> every pair among their members, plus within groups."""
    n = len(rep)
    order = np.argsort(rep, kind="stable")  # members grouped by representative, ascending
    counts = np.bincount(rep, minlength=n)
    starts = np.cumsum(counts) - counts
    firsts, seconds = [], []
    su, sv = counts[pairs[:, 0]], counts[pairs[:, 1]]
    block = su * sv
    if block.sum():
        t = np.repeat(np.arange(len(pairs)), block)
        o = np.arange(block.sum()) - np.repeat(np.cumsum(block) - block, block)
        firsts.append(order[starts[pairs[t, 0]] + o // sv[t]])
        seconds.append(order[starts[pairs[t, 1]] + o % sv[t]])
    nonempty = counts > 0  # within a group of size s, member x pairs with members x+1..s-1
    x = np.arange(n) - np.repeat(starts[nonempty], counts[nonempty])
    later = np.repeat(counts[nonempty], counts[nonempty]) - 1 - x
    if later.sum():
        src = np.repeat(np.arange(n), later)
        step = np.arange(later.sum()) - np.repeat(np.cumsum(later) - later, later) + 1
        firsts.append(order[src])
        seconds.append(order[src + step])
    if not firsts:
        return np.zeros((0, 2), np.int64)
    return unique_pairs(np.concatenate(firsts), np.concatenate(seconds), n)


def _identical(phash: np.ndarray, colorhash: np.ndarray) -> np.ndarray:
    """For each row, the first row with identical phash and colorhash (itself if first).

    Only rows whose 64-bit fingerprint repeats are compared byte by byte.
    """
    n = len(phash)
    keys = np.empty(n, np.uint64)
    idx_bits = _sorted_keys([(_fingerprints(phash, colorhash), None)], keys)
    same = (keys[1:] ^ keys[:-1]) < np.uint64(1 << idx_bits)
    repeats = np.r_[same, False] | np.r_[False, same]
    rep = np.arange(n, dtype=np.int64)
    suspects = np.sort((keys[repeats] & np.uint64((1 << idx_bits) - 1)).astype(np.int64))
    if suspects.size:
        rows = np.concatenate([phash[suspects], colorhash[suspects]], axis=1)
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        rep[suspects] = suspects[first[inverse.reshape(-1)]]
    return rep


def _default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, _MAX_WORKERS))


def joint_hamming_pairs(
    phash: UInt8[np.ndarray, "n pbytes"],
    colorhash: UInt8[np.ndarray, "n cbytes"],
    *,
    phash_radius: int,
    colorhash_radius: int,
    key_bands: tuple[int, int] | None = None,
    workers: int | None = None,
) -> Int64[np.ndarray, "m 2"]:
    """Every pair (i < j) within phash_radius in phash AND within colorhash_radius in colorhash.

    Cut the varying phash bits into r1 + tp disjoint bands and the colorhash bits into
    r2 + tc. A pair within r1 differs in at most r1 phash bands, so it agrees exactly on at
    least tp of them; likewise on tc colorhash bands (pigeonhole). It therefore shares at
    least one composite key made of tp phash bands and tc colorhash bands, of which there
    are C(r1 + tp, tp) C(r2 + tc, tc). For each key, one uint64 sort (key in the high bits,
    row in the low) lays equal keys side by side; rows in a run are candidates, verified
    with exact `hamming` on both codes, and each pair is reported under its first agreeing
    key only. The result is exactly the brute-force pair set: no misses (pigeonhole), no
    false pairs (verification).

    (tp, tc) = (1, 1) pairs one 16-bit phash band with one colorhash band (r1 = 8, r2 = 4:
    45 keys). The 12 hue values of a photograph's colorhash sum to at most 8, so its bands
    carry few bits, and (2, 0), two ~14-bit phash bands and no colour, is often the more
    selective 45 keys. By default the layout is chosen by sorting a few keys of each on a
    65k-row sample: the fewest key sorts plus candidates (a candidate costs about 4 rows of
    a sort).

    Rows identical in both codes are collapsed first and expanded at the end, so floods of
    copies cost their output, not one candidate per shared key. Bits equal in every row
    (the zero padding of a 98-bit colorhash in 13 bytes) are left out of the bands.

    Memory: the codes, the band values (up to 4 bytes per band per row) and two uint64 sort
    buffers per worker (16 bytes per row), plus at most 2^21 candidates at a time: about
    1.5 GB peak RSS at 10^7 rows with two workers, the 310 MB of codes included. Time: one
    sort of n keys per composite key plus the candidates; data whose keys carry few bits
    (long equal-key runs) grow the candidates, and the time, quadratically in the run length.

    Args:
        phash: (n, pbytes) packed phashes (e.g. `k2_data.hashing.phash_batch`).
        colorhash: (n, cbytes) packed colorhashes of the same images; any second code works.
        phash_radius: largest phash Hamming distance reported, r1.
        colorhash_radius: largest colorhash Hamming distance reported, r2.
        key_bands: (tp, tc) bands of each code in every key, or None to choose by cost.
        workers: threads, one key each at a time (numpy releases the GIL while sorting);
            default min(CPUs, 4).

    Returns:
        (m, 2) int64 pairs, i < j, sorted.

    References:
        Manku, Jain and Das Sarma 2007, "Detecting near-duplicates for web crawling" (exact
        recall from r + t disjoint blocks, t of which must agree: pigeonhole); Krea 2 report,
        Data: "we therefore combine a 12x12 phash with colorhash".
    """
    phash = check_codes(phash, phash_radius)
    colorhash = check_codes(colorhash, colorhash_radius)
    if len(phash) != len(colorhash):
        raise ValueError(
            f"phash has {len(phash)} rows and colorhash {len(colorhash)}; pass both hashes of "
            "the same images, one row per image in the same order"
        )
    if key_bands is not None and (len(key_bands) != 2 or min(key_bands) < 0):
        raise ValueError(f"key_bands must be (tp, tc) with tp, tc >= 0, got {key_bands}")
    workers = _default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    n = len(phash)
    radii = (phash_radius, colorhash_radius)
    layouts = _layouts(phash, colorhash, radii, key_bands)  # checks key_bands before any work
    if n < 2:
        return np.zeros((0, 2), np.int64)

    rep = _identical(phash, colorhash)
    distinct = np.flatnonzero(rep == np.arange(n))
    if len(distinct) < 2:
        return _expand(np.zeros((0, 2), np.int64), rep)
    if len(distinct) < n:  # search the distinct rows only, expand to the copies at the end
        phash, colorhash = phash[distinct], colorhash[distinct]
    else:
        rep = distinct = None  # nothing to expand: free 16 bytes per row
    layout = _choose(layouts, phash, colorhash)
    search = _Search(phash, colorhash, radii, layout)
    if workers == 1 or len(layout.keys) == 1:
        found = [search.key_pairs(p_key, c_key) for p_key, c_key in layout.keys]
    else:
        with ThreadPoolExecutor(min(workers, len(layout.keys))) as pool:
            found = list(pool.map(search.key_pairs, *zip(*layout.keys, strict=True)))
    del search
    pairs = np.concatenate([np.zeros((0, 2), np.int64), *found])
    if rep is None or distinct is None:
        return unique_pairs(pairs[:, 0], pairs[:, 1], n)
    return _expand(distinct[pairs], rep)
