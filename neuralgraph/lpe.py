"""Laplacian positional encodings of neural graphs, computed from their block structure.

A neural graph has nodes ``0 .. N-1``; its edges are described by :class:`Connection` objects
that join contiguous node ranges either densely (every node to every node; a *star* is a dense
connection whose source range has one node) or diagonally (``src_start + i`` to
``dst_start + i``). Ranges of different connections may coincide, nest or partially overlap.

Definition
----------
The graph is made undirected and unweighted: duplicate edges are merged, self-loops ``i - i``
are dropped, and a dense connection between overlapping ranges only links *distinct* nodes. With
``A`` the 0/1 adjacency matrix and ``D`` the degrees, the symmetric normalized Laplacian is
``L = I - D^{-1/2} A D^{-1/2}`` with ``d^{-1/2} = 0`` for isolated nodes (their row of ``L`` is
``e_i``). The positional encoding ``pos`` holds eigenvectors 2 .. k+1 of ``L`` (ascending
eigenvalue; the first, smallest one is skipped) as float32 columns ``[N, k]``; when ``N - 1 < k``
the missing columns are zero.

How it is computed
------------------
No ``N x N`` matrix and no sparse eigenproblem is ever formed. The nodes are split into *cells*:
contiguous runs cut at every connection boundary, with cuts propagated through diagonal
connections until every diagonal maps cells one-to-one (a run of nodes that no connection
touches is a cell of its own, with degree 0). All nodes of a cell play the same role, so the
eigenproblem splits into

* the *quotient* part (vectors constant on every cell): one symmetric ``C x C`` eigenproblem,
  ``C`` being the number of cells;
* the *cell-zero-sum* part (vectors summing to zero inside every cell): one small eigenproblem per
  *family* (cells linked by diagonal matchings), each eigenpair of which has multiplicity
  ``n_F - 1`` with eigenvectors ``u (x) a`` for ``u`` in a basis of ``1^perp`` in ``R^{n_F}``.

The cost is ``O(C^3)`` for the eigenproblems plus ``O(N k)`` to write the output.

Canonical rule (what makes the output unique and deterministic)
----------------------------------------------------------------
* **Clusters.** Candidate eigenvalues are sorted; consecutive values at most ``1e-8`` apart
  belong to the same cluster (single-linkage). Clusters are taken in ascending order. Inside a
  cluster, quotient eigenvectors come first (by ascending eigenvalue, then by their index in the
  quotient eigendecomposition), then family eigenvectors ordered by (the family's first node id,
  the index of ``a`` in the ascending eigendecomposition of the family matrix, ``j``).
* **Basis of** ``1^perp`` **in** ``R^n``: the Helmert vectors
  ``u_j = (1, ..., 1, -j, 0, ..., 0) / sqrt(j (j + 1))`` with ``j`` leading ones,
  ``j = 1 .. n-1``, taken in order of ``j``.
* **Sign.** Every returned column (and the family vector ``a`` before forming ``u (x) a``, and the
  quotient vector ``z``) is multiplied by ``+-1`` so that its entry of largest absolute value is
  positive; among the entries whose absolute value is within a relative ``1e-6`` of the largest,
  the one with the lowest index decides (see :func:`canonical_sign`).
* **Degenerate eigenvalues of one small eigenproblem.** When the quotient matrix or one family
  matrix has a repeated eigenvalue, the vectors inside that eigenspace are whatever
  ``numpy.linalg.eigh`` (LAPACK) returns, sign-fixed as above. ``eigh`` is deterministic for
  identical input, so repeated calls give bit-identical results, but only the eigenspace itself is
  guaranteed to agree with any other eigensolver. Likewise, when the ``(k+1)``-th eigenvalue is
  degenerate, which vectors of the eigenspace are returned follows the order above.

All computation is done in float64; ``pos`` is returned as float32.
"""

from __future__ import annotations

import logging
import math
import operator
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

__all__ = [
    "Connection",
    "LaplacianPE",
    "canonical_sign",
    "dense_laplacian",
    "laplacian_pe",
    "laplacian_spectrum",
]

logger = logging.getLogger(__name__)

#: Eigenvalues at most this far apart (single-linkage) form one cluster.
CLUSTER_TOL = 1e-8
#: Relative tolerance under which two absolute values count as tied for the sign rule.
SIGN_REL_TOL = 1e-6
#: Largest graph :func:`dense_laplacian` agrees to build.
DENSE_MAX_NODES = 20_000
#: Above this many cells a warning is logged (the eigenproblems cost O(cells^3)).
_MANY_CELLS = 5_000

_KINDS = ("dense", "diagonal")


class Connection(NamedTuple):
    """Edges between two contiguous node ranges.

    ``kind`` is ``"dense"`` (every node of ``[src_start, src_start + src_size)`` to every node of
    ``[dst_start, dst_start + dst_size)``) or ``"diagonal"`` (``src_start + i`` to
    ``dst_start + i`` for ``i < src_size``; requires ``src_size == dst_size``). A *star* is a dense
    connection with ``src_size == 1``. Direction does not matter. A connection with an empty range
    contributes nothing.
    """

    kind: str
    src_start: int
    src_size: int
    dst_start: int
    dst_size: int


@dataclass(frozen=True)
class LaplacianPE:
    """Result of :func:`laplacian_pe`.

    Attributes:
        pos: float32 ``[N, k]``; column ``i`` is the unit eigenvector of the ``(i + 2)``-th
            smallest eigenvalue, zero for padded columns.
        eigenvalues: float64 ``[k]``; the eigenvalue of each column, ``nan`` for padded columns.
            They follow the column order, so inside one cluster (values at most ``1e-8`` apart)
            they need not be strictly ascending.
        num_cells: number of cells (distinct node roles) the computation used.
    """

    pos: torch.Tensor
    eigenvalues: torch.Tensor
    num_cells: int


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {value!r}") from None


def _validate(num_nodes: object, connections: Sequence[Connection]) -> tuple[int, list[Connection]]:
    """Check the input and return ``(N, non-empty connections with plain int fields)``."""
    n = _as_int(num_nodes, "num_nodes")
    if n < 0:
        raise ValueError(f"num_nodes must be >= 0, got {n}")
    checked: list[Connection] = []
    for idx, raw in enumerate(connections):
        try:
            conn = raw if isinstance(raw, Connection) else Connection(*raw)
        except TypeError as exc:
            raise ValueError(f"connection {idx} ({raw!r}) is not a Connection: {exc}") from None
        where = f"connection {idx} {conn!r}"
        if conn.kind not in _KINDS:
            raise ValueError(f"{where}: kind must be one of {_KINDS}, got {conn.kind!r}")
        try:
            ss, sn, ds, dn = (
                _as_int(conn.src_start, "src_start"),
                _as_int(conn.src_size, "src_size"),
                _as_int(conn.dst_start, "dst_start"),
                _as_int(conn.dst_size, "dst_size"),
            )
        except TypeError as exc:
            raise ValueError(f"{where}: {exc}") from None
        for name, start, size in (("src", ss, sn), ("dst", ds, dn)):
            if size < 0:
                raise ValueError(f"{where}: {name}_size must be >= 0, got {size}")
            if size > 0 and not (0 <= start and start + size <= n):
                raise ValueError(
                    f"{where}: {name} range [{start}, {start + size}) is outside [0, {n})"
                )
            if size == 0 and not 0 <= start <= n:
                raise ValueError(f"{where}: {name}_start {start} is outside [0, {n}]")
        if conn.kind == "diagonal" and sn != dn:
            raise ValueError(f"{where}: diagonal connection needs src_size == dst_size")
        if sn == 0 or dn == 0:
            continue
        checked.append(Connection(conn.kind, ss, sn, ds, dn))
    return n, checked


def _validate_k(k: object, name: str = "k") -> int:
    value = _as_int(k, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


# ----------------------------------------------------------------------------------------------
# Sign rule
# ----------------------------------------------------------------------------------------------


def canonical_sign(v: np.ndarray) -> np.ndarray:
    """Flip a vector (or each column of a matrix) so that its largest-magnitude entry is positive.

    Among the entries whose absolute value is within a relative ``1e-6`` of the largest absolute
    value, the one with the lowest index decides the sign. All-zero columns are left unchanged.
    Returns a new float array; the input is not modified.
    """
    arr = np.asarray(v)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"canonical_sign expects a vector or a matrix, got shape {arr.shape}")
    mat = arr.reshape(arr.shape[0], -1) if arr.ndim == 2 else arr[:, None]
    if mat.shape[0] == 0 or mat.shape[1] == 0:
        return arr.copy()
    mag = np.abs(mat)
    top = mag.max(axis=0)
    first = np.argmax(mag >= top * (1.0 - SIGN_REL_TOL), axis=0)
    signs = np.where(mat[first, np.arange(mat.shape[1])] < 0, -1.0, 1.0).astype(mat.dtype)
    out = mat * signs[None, :]
    out += 0.0  # turn -0.0 into +0.0 so that results compare bit-identically
    return out.reshape(arr.shape)


# ----------------------------------------------------------------------------------------------
# Dense reference
# ----------------------------------------------------------------------------------------------


def dense_laplacian(num_nodes: int, connections: Sequence[Connection]) -> np.ndarray:
    """Build the dense normalized Laplacian ``L`` straight from the definition (float64 ``[N, N]``).

    Meant for tests and small graphs; raises :class:`ValueError` above 20 000 nodes.
    """
    n, conns = _validate(num_nodes, connections)
    if n > DENSE_MAX_NODES:
        raise ValueError(f"dense_laplacian is limited to {DENSE_MAX_NODES} nodes, got {n}")
    adj = np.zeros((n, n), dtype=np.float64)
    for conn in conns:
        src = np.arange(conn.src_start, conn.src_start + conn.src_size)
        dst = np.arange(conn.dst_start, conn.dst_start + conn.dst_size)
        if conn.kind == "dense":
            adj[np.ix_(src, dst)] = 1.0
            adj[np.ix_(dst, src)] = 1.0
        else:
            adj[src, dst] = 1.0
            adj[dst, src] = 1.0
    np.fill_diagonal(adj, 0.0)
    deg = adj.sum(axis=1)
    scale = np.zeros(n)
    nz = deg > 0
    scale[nz] = 1.0 / np.sqrt(deg[nz])
    return np.eye(n) - scale[:, None] * adj * scale[None, :]


# ----------------------------------------------------------------------------------------------
# Block structure
# ----------------------------------------------------------------------------------------------


@dataclass
class _Structure:
    """Cells, their relations and the two reduced eigenproblems."""

    num_nodes: int
    starts: np.ndarray  # int64 [C], first node of each cell (ascending)
    sizes: np.ndarray  # int64 [C]
    degrees: np.ndarray  # int64 [C]
    q_values: np.ndarray  # float64 [C], eigenvalues of L from the quotient (ascending mu order)
    q_vectors: np.ndarray  # float64 [C, C], columns z
    families: list[np.ndarray]  # cell indices (ascending) of each family with n_F >= 2
    f_values: list[np.ndarray]  # eigenvalues of L from each family matrix
    f_vectors: list[np.ndarray]  # columns a of each family matrix


def _cell_cuts(num_nodes: int, conns: Sequence[Connection]) -> np.ndarray:
    """Sorted cut positions (including 0 and N) closed under propagation through diagonals."""
    bounds = [0, num_nodes]
    for conn in conns:
        bounds += [
            conn.src_start,
            conn.src_start + conn.src_size,
            conn.dst_start,
            conn.dst_start + conn.dst_size,
        ]
    cuts = np.unique(np.asarray(bounds, dtype=np.int64))
    diag = np.asarray(
        [
            (c.src_start, c.dst_start, c.src_size)
            for c in conns
            if c.kind == "diagonal" and c.src_start != c.dst_start
        ],
        dtype=np.int64,
    ).reshape(-1, 3)
    if diag.shape[0] == 0:
        return cuts
    src, dst, size = diag[:, 0], diag[:, 1], diag[:, 2]
    pending = cuts
    rounds = 0
    while pending.size:
        rounds += 1
        p = pending[:, None]
        fwd = (p > src) & (p < src + size)
        bwd = (p > dst) & (p < dst + size)
        images = np.concatenate([(p - src + dst)[fwd], (p - dst + src)[bwd]])
        pending = np.setdiff1d(images, cuts)  # unique, sorted
        if pending.size:
            cuts = np.union1d(cuts, pending)
    logger.debug("cut propagation: %d rounds, %d cuts", rounds, cuts.size)
    return cuts


def _build_structure(num_nodes: int, conns: Sequence[Connection]) -> _Structure:
    cuts = _cell_cuts(num_nodes, conns)
    starts = cuts[:-1]
    sizes = np.diff(cuts)
    num_cells = int(starts.size)
    if num_cells > _MANY_CELLS:
        logger.warning(
            "the graph has %d cells (distinct node roles); the dense eigenproblems cost "
            "O(cells^3) and may be slow",
            num_cells,
        )

    dense = np.zeros((num_cells, num_cells), dtype=bool)
    match = np.zeros((num_cells, num_cells), dtype=bool)
    for conn in conns:
        a0, a1 = np.searchsorted(starts, [conn.src_start, conn.src_start + conn.src_size])
        b0, b1 = np.searchsorted(starts, [conn.dst_start, conn.dst_start + conn.dst_size])
        if conn.kind == "dense":
            dense[a0:a1, b0:b1] = True
            dense[b0:b1, a0:a1] = True
        else:
            # Propagated cuts guarantee the two ranges hold the same aligned cells.
            offs = np.arange(a1 - a0)
            match[a0 + offs, b0 + offs] = True
            match[b0 + offs, a0 + offs] = True

    self_dense = np.diagonal(dense).copy() & (sizes >= 2)
    np.fill_diagonal(dense, False)
    np.fill_diagonal(match, False)
    match &= ~dense

    degrees = (
        dense.astype(np.int64) @ sizes
        + np.where(self_dense, sizes - 1, 0)
        + match.sum(axis=1, dtype=np.int64)
    )
    scale = np.zeros(num_cells)
    nz = degrees > 0
    scale[nz] = 1.0 / np.sqrt(degrees[nz].astype(np.float64))

    # Symmetric quotient Q = S^{1/2} B S^{-1/2} with B the neighbour counts, written directly in
    # its symmetric form so that it is exactly symmetric.
    root = np.sqrt(sizes.astype(np.float64))
    q = np.where(dense, root[:, None] * root[None, :], 0.0)
    q += match
    q[np.diag_indices(num_cells)] = np.where(self_dense, sizes - 1, 0)
    q *= scale[:, None] * scale[None, :]
    if num_cells:
        mu, z = np.linalg.eigh(q)
    else:
        mu, z = np.zeros(0), np.zeros((0, 0))
    # Ascending L-eigenvalue order = descending mu order.
    q_values = (1.0 - mu)[::-1].copy()
    q_vectors = z[:, ::-1].copy()

    families, f_values, f_vectors = _families(match, self_dense, sizes, scale)
    logger.debug(
        "lpe structure: %d nodes, %d cells, %d families with multiplicity",
        num_nodes,
        num_cells,
        len(families),
    )
    return _Structure(
        num_nodes=num_nodes,
        starts=starts,
        sizes=sizes,
        degrees=degrees,
        q_values=q_values,
        q_vectors=q_vectors,
        families=families,
        f_values=f_values,
        f_vectors=f_vectors,
    )


def _families(
    match: np.ndarray, self_dense: np.ndarray, sizes: np.ndarray, scale: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Connected components of the matching relation and the eigenpairs of their matrices.

    Families whose cells have a single node contribute nothing (``n_F - 1 = 0``) and are dropped.
    Families are returned ordered by their first cell, i.e. by their first node id.
    """
    num_cells = sizes.size
    label = np.full(num_cells, -1, dtype=np.int64)
    families: list[np.ndarray] = []
    for seed in range(num_cells):
        if label[seed] >= 0:
            continue
        label[seed] = seed
        members = [seed]
        frontier = [seed]
        while frontier:
            nxt = np.flatnonzero(match[frontier].any(axis=0) & (label < 0))
            label[nxt] = seed
            members.extend(nxt.tolist())
            frontier = nxt.tolist()
        if sizes[seed] >= 2:
            families.append(np.sort(np.asarray(members, dtype=np.int64)))

    f_values: list[np.ndarray] = []
    f_vectors: list[np.ndarray] = []
    for cells in families:
        sub = match[np.ix_(cells, cells)].astype(np.float64)
        sub *= scale[cells][:, None] * scale[cells][None, :]
        sub[np.diag_indices(cells.size)] = np.where(
            self_dense[cells], -(scale[cells] ** 2), 0.0
        )
        mu, a = np.linalg.eigh(sub)
        a = canonical_sign(a)
        # eigh is ascending in mu; "index of a in ascending order" refers to this order.
        f_values.append(1.0 - mu)
        f_vectors.append(a)
    return families, f_values, f_vectors


# ----------------------------------------------------------------------------------------------
# Candidate ordering
# ----------------------------------------------------------------------------------------------


def _ordered_candidates(st: _Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All eigen-candidates in canonical order.

    Returns ``(values, multiplicity, family, index)``: ``family`` is ``-1`` for quotient
    candidates (``index`` = column of ``q_vectors``), else the position in ``st.families``
    (``index`` = column of that family's ``a`` matrix).
    """
    nq = st.q_values.size
    values = [st.q_values]
    mult = [np.ones(nq, dtype=np.int64)]
    fam = [np.full(nq, -1, dtype=np.int64)]
    index = [np.arange(nq, dtype=np.int64)]
    first_node = [np.full(nq, -1, dtype=np.int64)]
    for f, (cells, vals) in enumerate(zip(st.families, st.f_values)):
        m = vals.size
        values.append(vals)
        mult.append(np.full(m, int(st.sizes[cells[0]]) - 1, dtype=np.int64))
        fam.append(np.full(m, f, dtype=np.int64))
        index.append(np.arange(m, dtype=np.int64))
        first_node.append(np.full(m, int(st.starts[cells[0]]), dtype=np.int64))
    v = np.concatenate(values)
    mu = np.concatenate(mult)
    fa = np.concatenate(fam)
    ix = np.concatenate(index)
    fn = np.concatenate(first_node)
    if v.size == 0:
        return v, mu, fa, ix

    by_value = np.argsort(v, kind="stable")
    sv = v[by_value]
    cluster_sorted = np.concatenate([[0], np.cumsum(np.diff(sv) > CLUSTER_TOL)])
    cluster = np.empty_like(cluster_sorted)
    cluster[by_value] = cluster_sorted
    is_family = (fa >= 0).astype(np.int64)
    # Quotient: (value, index); family: (first node id, index of a). lexsort: last key primary.
    q_value_key = np.where(is_family == 0, v, 0.0)
    order = np.lexsort((ix, fn, q_value_key, is_family, cluster))
    return v[order], mu[order], fa[order], ix[order]


def _spectrum(st: _Structure, count: int) -> np.ndarray:
    vals = np.concatenate([st.q_values, *st.f_values])
    mult = np.concatenate(
        [np.ones(st.q_values.size, dtype=np.int64)]
        + [
            np.full(fv.size, int(st.sizes[cells[0]]) - 1, dtype=np.int64)
            for cells, fv in zip(st.families, st.f_values)
        ]
    )
    order = np.argsort(vals, kind="stable")
    vals, mult = vals[order], mult[order]
    ends = np.cumsum(mult)
    needed = int(np.searchsorted(ends, count, side="left")) + 1 if count else 0
    needed = min(needed, vals.size)
    out = np.repeat(vals[:needed], mult[:needed])
    return out[:count]


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


def laplacian_spectrum(
    num_nodes: int, connections: Sequence[Connection], count: int
) -> torch.Tensor:
    """The ``count`` smallest eigenvalues of ``L``, with multiplicity, ascending (float64).

    Raises :class:`ValueError` when ``count`` is negative or larger than ``num_nodes``.
    """
    n, conns = _validate(num_nodes, connections)
    count = _validate_k(count, "count")
    if count > n:
        raise ValueError(f"count must be <= num_nodes ({n}), got {count}")
    st = _build_structure(n, conns)
    return torch.from_numpy(_spectrum(st, count))


def _materialize(
    st: _Structure, family: int, index: int, j: int, out: np.ndarray
) -> None:
    """Write one (unsigned) eigenvector into the float64 buffer ``out`` of length N."""
    if family < 0:
        y = st.q_vectors[:, index] / np.sqrt(st.sizes.astype(np.float64))
        y = canonical_sign(y)  # equals the node-level rule: cells are in node order
        out[:] = np.repeat(y, st.sizes)
        return
    out[:] = 0.0
    cells = st.families[family]
    a = st.f_vectors[family][:, index]
    head = 1.0 / math.sqrt(j * (j + 1))
    for c, coef in zip(cells.tolist(), a.tolist()):
        s = int(st.starts[c])
        out[s : s + j] = coef * head
        out[s + j] = -j * coef * head


def laplacian_pe(num_nodes: int, connections: Sequence[Connection], k: int = 8) -> LaplacianPE:
    """Laplacian positional encodings: eigenvectors 2 .. k+1 of the normalized Laplacian.

    Args:
        num_nodes: number of nodes ``N``.
        connections: the graph's edges as :class:`Connection` objects.
        k: number of encoding columns.

    Returns:
        :class:`LaplacianPE` with ``pos`` float32 ``[N, k]`` (zero columns when ``N - 1 < k``),
        ``eigenvalues`` float64 ``[k]`` (``nan`` for padded columns) and ``num_cells``.

    The vectors follow the canonical rule of the module docstring.
    """
    n, conns = _validate(num_nodes, connections)
    k = _validate_k(k)
    st = _build_structure(n, conns)
    values, mult, fam, index = _ordered_candidates(st)

    # Columns are written as rows of a [k, N] buffer (contiguous writes) and transposed once.
    rows = np.zeros((k, n), dtype=np.float32)
    eigenvalues = np.full(k, np.nan, dtype=np.float64)
    want = min(k + 1, n)
    col = -1  # -1: the first (skipped) eigenvector
    buf = np.empty(n, dtype=np.float64)
    for value, m, f, i in zip(values.tolist(), mult.tolist(), fam.tolist(), index.tolist()):
        if col + 1 >= want:
            break
        for j in range(1, m + 1):
            if col + 1 >= want:
                break
            if col >= 0:
                _materialize(st, f, i, j, buf)
                rows[col] = canonical_sign(buf)
                eigenvalues[col] = value
            col += 1
    logger.debug("laplacian_pe: N=%d k=%d cells=%d filled=%d", n, k, st.starts.size, max(col, 0))
    pos = np.ascontiguousarray(rows.T)
    del rows
    return LaplacianPE(
        pos=torch.from_numpy(pos),
        eigenvalues=torch.from_numpy(eigenvalues),
        num_cells=int(st.starts.size),
    )
