"""Tests of :mod:`neuralgraph.lpe` against the dense Laplacian built from the definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuralgraph.lpe import (
    Connection,
    LaplacianPE,
    canonical_sign,
    dense_laplacian,
    laplacian_pe,
    laplacian_spectrum,
)

C = Connection

# ----------------------------------------------------------------------------------------------
# Random structures
# ----------------------------------------------------------------------------------------------


@st.composite
def structures(draw: st.DrawFn) -> tuple[int, list[Connection]]:
    """Groups of random sizes plus random dense / star / diagonal connections between ranges."""
    sizes = draw(st.lists(st.integers(1, 7), min_size=1, max_size=8))
    lead = draw(st.integers(0, 2))
    trail = draw(st.integers(0, 2))
    groups = []
    pos = lead
    for size in sizes:
        groups.append((pos, size))
        pos += size
    n = pos + trail

    def any_range(max_size: int | None = None) -> tuple[int, int]:
        mode = draw(st.sampled_from(["group", "sub", "any"]))
        if mode == "group":
            start, size = draw(st.sampled_from(groups))
        elif mode == "sub":
            g_start, g_size = draw(st.sampled_from(groups))
            lo = draw(st.integers(0, g_size - 1))
            hi = draw(st.integers(lo + 1, g_size))
            start, size = g_start + lo, hi - lo
        else:
            start = draw(st.integers(0, n - 1))
            size = draw(st.integers(1, n - start))
        if max_size is not None:
            size = min(size, max_size)
        return start, size

    conns: list[Connection] = []
    for _ in range(draw(st.integers(0, 7))):
        kind = draw(
            st.sampled_from(["dense", "star", "diagonal", "diagonal_groups", "diagonal_groups"])
        )
        if kind == "dense":
            (s, a), (d, b) = any_range(), any_range()
            conns.append(C("dense", s, a, d, b))
        elif kind == "star":
            s = draw(st.integers(0, n - 1))
            d, b = any_range()
            conns.append(C("dense", s, 1, d, b))
        elif kind == "diagonal":
            size = draw(st.integers(1, n))
            s = draw(st.integers(0, n - size))
            d = draw(st.integers(0, n - size))
            conns.append(C("diagonal", s, size, d, size))
        else:  # diagonal between (parts of) two groups, like a residual stream
            (gs, ga), (hs, hb) = draw(st.sampled_from(groups)), draw(st.sampled_from(groups))
            size = draw(st.integers(1, min(ga, hb)))
            conns.append(C("diagonal", gs, size, hs, size))
    if draw(st.booleans()):  # swap the roles of some connections (direction must not matter)
        conns = [C(c.kind, c.dst_start, c.dst_size, c.src_start, c.src_size) for c in conns]
    return n, conns


def _dense_eig(n: int, conns: list[Connection]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lap = dense_laplacian(n, conns)
    w, v = np.linalg.eigh(lap)
    return lap, w, v


# ----------------------------------------------------------------------------------------------
# Property tests against the dense path
# ----------------------------------------------------------------------------------------------

_SETTINGS = settings(
    deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)


@_SETTINGS
@given(structures())
def test_spectrum_matches_dense(case: tuple[int, list[Connection]]) -> None:
    n, conns = case
    _, w, _ = _dense_eig(n, conns)
    got = laplacian_spectrum(n, conns, n)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), w, atol=1e-8, rtol=0)
    part = laplacian_spectrum(n, conns, n // 2)
    np.testing.assert_allclose(part.numpy(), w[: n // 2], atol=1e-8, rtol=0)


@_SETTINGS
@given(structures(), st.integers(0, 12))
def test_encoding_matches_dense(case: tuple[int, list[Connection]], k: int) -> None:
    n, conns = case
    lap, w, vecs = _dense_eig(n, conns)
    res = laplacian_pe(n, conns, k)
    assert isinstance(res, LaplacianPE)
    assert res.pos.dtype == torch.float32 and tuple(res.pos.shape) == (n, k)
    assert res.eigenvalues.dtype == torch.float64 and tuple(res.eigenvalues.shape) == (k,)
    assert 1 <= res.num_cells <= n
    pos = res.pos.numpy().astype(np.float64)
    lam = res.eigenvalues.numpy()
    m = max(min(k, n - 1), 0)

    # Padding.
    assert np.all(pos[:, m:] == 0)
    assert np.all(np.isnan(lam[m:]))

    # Orthonormal columns.
    gram = pos[:, :m].T @ pos[:, :m]
    np.testing.assert_allclose(gram, np.eye(m), atol=1e-6, rtol=0)

    for c in range(m):
        v = pos[:, c]
        np.testing.assert_allclose(lam[c], w[c + 1], atol=1e-7, rtol=0)
        np.testing.assert_allclose(lap @ v, lam[c] * v, atol=1e-6, rtol=0)
        others = np.delete(w, c + 1)
        if np.all(np.abs(others - w[c + 1]) > 1e-6):
            np.testing.assert_allclose(v, canonical_sign(vecs[:, c + 1]), atol=1e-6, rtol=0)
        else:
            space = vecs[:, np.abs(w - w[c + 1]) <= 1e-6]
            residual = v - space @ (space.T @ v)
            assert np.linalg.norm(residual) < 1e-6
        # Every column obeys the sign rule itself (unless float32 rounding moved an entry across
        # the relative 1e-6 tie threshold).
        ratio = np.abs(v) / np.abs(v).max()
        if not np.any((ratio > 1 - 2e-6) & (ratio < 1 - 0.5e-6)):
            np.testing.assert_array_equal(canonical_sign(v), v)


@settings(deadline=None, max_examples=40)
@given(structures(), st.integers(0, 10))
def test_deterministic(case: tuple[int, list[Connection]], k: int) -> None:
    n, conns = case
    a = laplacian_pe(n, conns, k)
    b = laplacian_pe(n, conns, k)
    assert torch.equal(a.pos, b.pos)
    assert torch.equal(a.eigenvalues.nan_to_num(-1.0), b.eigenvalues.nan_to_num(-1.0))
    assert a.num_cells == b.num_cells


# ----------------------------------------------------------------------------------------------
# Concrete examples
# ----------------------------------------------------------------------------------------------


def _mlp(n_in: int, n_hid: int, n_out: int) -> tuple[int, list[Connection]]:
    """in, bias0, hidden, bias1, out; dense in->hid, star b0->hid, dense hid->out, star b1->out."""
    b0 = n_in
    hid = b0 + 1
    b1 = hid + n_hid
    out = b1 + 1
    n = out + n_out
    return n, [
        C("dense", 0, n_in, hid, n_hid),
        C("dense", b0, 1, hid, n_hid),
        C("dense", hid, n_hid, out, n_out),
        C("dense", b1, 1, out, n_out),
    ]


def test_mlp_example() -> None:
    n, conns = _mlp(4, 5, 3)
    assert n == 14
    _, w, vecs = _dense_eig(n, conns)
    np.testing.assert_allclose(w[:4], [0.0, 0.6772513883, 1.0, 1.0], atol=1e-9)
    spec = laplacian_spectrum(n, conns, n).numpy()
    np.testing.assert_allclose(spec, w, atol=1e-10)
    res = laplacian_pe(n, conns, k=4)
    assert res.num_cells == 5
    np.testing.assert_allclose(res.eigenvalues.numpy(), w[1:5], atol=1e-10)
    # Non-degenerate second eigenvector equals the sign-fixed dense one.
    np.testing.assert_allclose(res.pos[:, 0].numpy(), canonical_sign(vecs[:, 1]), atol=1e-6)
    # Inside the eigenvalue-1 cluster the quotient vector comes first: constant on every cell.
    col = res.pos[:, 1].numpy()
    for lo, hi in [(0, 4), (5, 10), (11, 14)]:
        assert np.ptp(col[lo:hi]) < 1e-7


def test_residual_chain() -> None:
    # embedding (3) -> stream r0 (4) -> r1 -> r2 with residual diagonals; per block an
    # "attention" reading part of the stream and writing to another part, plus a bias star.
    groups = {
        "emb": (0, 3), "r0": (3, 4), "r1": (7, 4), "r2": (11, 4), "h1": (15, 2), "h2": (17, 3)
    }
    n = 20
    conns = [
        C("dense", 0, 3, 3, 4),
        C("diagonal", 3, 4, 7, 4),
        C("diagonal", 7, 4, 11, 4),
        C("dense", 3, 2, 15, 2),  # r0[0:2] -> h1
        C("dense", 15, 2, 9, 2),  # h1 -> r1[2:4]
        C("dense", 7, 4, 17, 3),  # r1 -> h2
        C("dense", 17, 3, 11, 4),  # h2 -> r2
        C("dense", 19, 1, 11, 4),  # star from the last h2 node (overlaps h2 -> r2)
    ]
    assert sum(size for _, size in groups.values()) == n
    lap, w, vecs = _dense_eig(n, conns)
    np.testing.assert_allclose(laplacian_spectrum(n, conns, n).numpy(), w, atol=1e-9)
    res = laplacian_pe(n, conns, k=8)
    pos = res.pos.numpy().astype(np.float64)
    np.testing.assert_allclose(res.eigenvalues.numpy(), w[1:9], atol=1e-9)
    np.testing.assert_allclose(lap @ pos, pos * res.eigenvalues.numpy()[None, :], atol=1e-6)
    np.testing.assert_allclose(pos.T @ pos, np.eye(8), atol=1e-6)
    assert res.num_cells < n


def test_transformer_like_stream_has_few_cells() -> None:
    # A residual stream of width 64 through 6 blocks; each block splits the stream in 4 heads.
    width, blocks, heads = 64, 6, 4
    conns = []
    n = width * (blocks + 1)
    for b in range(blocks):
        conns.append(C("diagonal", b * width, width, (b + 1) * width, width))
        hw = width // heads
        for h in range(heads):
            conns.append(C("dense", b * width + h * hw, hw, (b + 1) * width + h * hw, hw))
    res = laplacian_pe(n, conns, k=6)
    assert res.num_cells == heads * (blocks + 1)
    lap, w, _ = _dense_eig(n, conns)
    np.testing.assert_allclose(res.eigenvalues.numpy(), w[1:7], atol=1e-9)
    pos = res.pos.numpy().astype(np.float64)
    np.testing.assert_allclose(lap @ pos, pos * res.eigenvalues.numpy()[None, :], atol=1e-6)


def test_padding_when_k_exceeds_n() -> None:
    n, conns = 4, [C("dense", 0, 2, 2, 2)]
    res = laplacian_pe(n, conns, k=7)
    assert tuple(res.pos.shape) == (4, 7)
    assert torch.all(res.pos[:, 3:] == 0)
    assert torch.all(torch.isnan(res.eigenvalues[3:]))
    assert not torch.any(torch.isnan(res.eigenvalues[:3]))
    _, w, _ = _dense_eig(n, conns)
    np.testing.assert_allclose(res.eigenvalues[:3].numpy(), w[1:], atol=1e-10)


def test_degenerate_inputs() -> None:
    # No nodes.
    res = laplacian_pe(0, [], k=3)
    assert tuple(res.pos.shape) == (0, 3) and res.num_cells == 0
    assert laplacian_spectrum(0, [], 0).numel() == 0
    # No edges at all: every eigenvalue is 1.
    res = laplacian_pe(5, [], k=3)
    assert res.num_cells == 1
    np.testing.assert_allclose(res.eigenvalues.numpy(), 1.0)
    pos = res.pos.numpy().astype(np.float64)
    np.testing.assert_allclose(pos.T @ pos, np.eye(3), atol=1e-7)
    np.testing.assert_allclose(laplacian_spectrum(5, [], 5).numpy(), np.ones(5))
    # k = 0.
    res = laplacian_pe(5, [C("dense", 0, 2, 2, 3)], k=0)
    assert tuple(res.pos.shape) == (5, 0) and res.eigenvalues.numel() == 0
    # Empty ranges contribute nothing.
    n, conns = 6, [C("dense", 0, 3, 3, 3)]
    a = laplacian_pe(n, conns, k=3)
    b = laplacian_pe(n, conns + [C("dense", 6, 0, 0, 2), C("diagonal", 1, 0, 2, 0)], k=3)
    assert torch.equal(a.pos, b.pos)


def test_complete_graph_and_self_matching() -> None:
    # Dense of a range with itself is the complete graph; a diagonal onto itself adds nothing.
    n = 6
    conns = [C("dense", 0, 6, 0, 6), C("diagonal", 0, 6, 0, 6)]
    np.testing.assert_allclose(
        laplacian_spectrum(n, conns, n).numpy(), [0.0] + [6 / 5] * 5, atol=1e-12
    )
    lap = dense_laplacian(n, conns)
    np.testing.assert_allclose(lap, np.eye(n) * (1 + 1 / 5) - np.ones((n, n)) / 5, atol=1e-15)


def test_shifted_overlapping_diagonal_is_a_path() -> None:
    # i <-> i+1 for i < 9: a path of 10 nodes; every node becomes its own cell.
    n, conns = 10, [C("diagonal", 0, 9, 1, 9)]
    res = laplacian_pe(n, conns, k=3)
    assert res.num_cells == 10
    _, w, vecs = _dense_eig(n, conns)
    np.testing.assert_allclose(res.eigenvalues.numpy(), w[1:4], atol=1e-10)
    np.testing.assert_allclose(res.pos.numpy(), canonical_sign(vecs[:, 1:4]), atol=1e-6)


def test_dense_laplacian_small_path() -> None:
    lap = dense_laplacian(3, [C("dense", 0, 1, 1, 1), C("diagonal", 1, 1, 2, 1)])
    s = 1 / np.sqrt(2)
    expected = np.array([[1, -s, 0], [-s, 1, -s], [0, -s, 1]])
    np.testing.assert_allclose(lap, expected, atol=1e-15)
    with pytest.raises(ValueError, match="20000"):
        dense_laplacian(20_001, [])


# ----------------------------------------------------------------------------------------------
# canonical_sign
# ----------------------------------------------------------------------------------------------


def test_canonical_sign_rules() -> None:
    np.testing.assert_array_equal(canonical_sign(np.array([0.1, -0.9, 0.3])), [-0.1, 0.9, -0.3])
    # Tie within relative 1e-6: the lowest index decides.
    np.testing.assert_array_equal(canonical_sign(np.array([-0.5, 0.5 + 1e-9])), [0.5, -0.5 - 1e-9])
    # Not a tie: the strictly larger one decides.
    np.testing.assert_array_equal(canonical_sign(np.array([-0.5, 0.5001])), [-0.5, 0.5001])
    mat = np.array([[1.0, -2.0, 0.0], [-3.0, 1.0, 0.0]])
    np.testing.assert_array_equal(canonical_sign(mat), [[-1.0, 2.0, 0.0], [3.0, -1.0, 0.0]])
    x = np.array([1.0, -2.0])
    canonical_sign(x)
    np.testing.assert_array_equal(x, [1.0, -2.0])  # input untouched
    assert not np.signbit(canonical_sign(np.array([0.0, -1.0]))).any()


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conn", "pattern"),
    [
        (C("sparse", 0, 1, 1, 1), "kind"),
        (C("dense", -1, 2, 3, 1), r"\[-1, 1\)"),
        (C("dense", 0, 2, 4, 3), r"\[4, 7\)"),
        (C("diagonal", 0, 2, 3, 3), "src_size == dst_size"),
        (C("dense", 0, -1, 3, 1), "src_size"),
    ],
)
def test_validation_names_the_connection(conn: Connection, pattern: str) -> None:
    conns = [C("dense", 0, 1, 1, 1), conn]
    for fn in (
        lambda: laplacian_pe(6, conns),
        lambda: laplacian_spectrum(6, conns, 2),
        lambda: dense_laplacian(6, conns),
    ):
        with pytest.raises(ValueError, match=pattern) as info:
            fn()
        assert "connection 1" in str(info.value)
        assert repr(conn.kind) in str(info.value)


def test_validation_of_k_and_count() -> None:
    with pytest.raises(ValueError, match="k must be >= 0"):
        laplacian_pe(4, [], k=-1)
    with pytest.raises(ValueError, match="count"):
        laplacian_spectrum(4, [], 5)
    with pytest.raises(ValueError, match="count"):
        laplacian_spectrum(4, [], -1)
    with pytest.raises(ValueError, match="num_nodes"):
        laplacian_pe(-1, [])


# ----------------------------------------------------------------------------------------------
# Large structure (performance sanity, no timing assertion)
# ----------------------------------------------------------------------------------------------


def _disjoint_matvec(n: int, conns: list[Connection], x: np.ndarray) -> np.ndarray:
    """``A x`` for dense connections between disjoint ranges without repeated edges (O(N k))."""
    y = np.zeros_like(x)
    for c in conns:
        src = slice(c.src_start, c.src_start + c.src_size)
        dst = slice(c.dst_start, c.dst_start + c.dst_size)
        y[dst] += x[src].sum(axis=0)
        y[src] += x[dst].sum(axis=0)
    return y


def test_large_mlp_uses_cells() -> None:
    n, conns = _mlp(1000, 100_000, 98_998)
    assert n == 200_000
    k = 8
    res = laplacian_pe(n, conns, k=k)
    assert res.num_cells == 5
    assert tuple(res.pos.shape) == (n, k) and res.pos.dtype == torch.float32
    lam = res.eigenvalues.numpy()
    assert np.all(np.diff(lam) >= -1e-8)
    pos = res.pos.numpy().astype(np.float64)
    np.testing.assert_allclose(pos.T @ pos, np.eye(k), atol=1e-5)
    deg = _disjoint_matvec(n, conns, np.ones((n, 1)))[:, 0]
    scale = 1 / np.sqrt(deg)
    lap_pos = pos - scale[:, None] * _disjoint_matvec(n, conns, scale[:, None] * pos)
    np.testing.assert_allclose(lap_pos, pos * lam[None, :], atol=1e-6)
    spec = laplacian_spectrum(n, conns, 10).numpy()
    np.testing.assert_allclose(spec[1 : k + 1], lam, atol=1e-10)
