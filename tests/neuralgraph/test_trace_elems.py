"""Elems (a parameter's flat offsets as a strided meta view) agrees with real offset tensors
under any chain of layout ops, and says which views cover their parameter exactly once."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuralgraph.params import ParamSpec
from neuralgraph.trace.elems import Elems
from neuralgraph.trace.rows import unique_rows

OPS = [
    lambda t: t.transpose(0, -1),
    lambda t: t.reshape(-1),
    lambda t: t.reshape(t.shape[0], -1),
    lambda t: t[1:],
    lambda t: t[..., ::2],
    lambda t: t.unsqueeze(1),
    lambda t: t.flip(0),
    lambda t: t.unsqueeze(0).expand(2, *t.shape),
    lambda t: t.select(0, t.shape[0] - 1) if t.ndim > 1 else t,
]


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(2, 4), min_size=1, max_size=3), offset=st.integers(0, 50),
       ops=st.lists(st.integers(0, len(OPS) - 1), max_size=4))
def test_offsets_follow_layout_ops(shape, offset, ops):
    spec = ParamSpec("w", tuple(shape), offset)
    e = Elems.of(spec)
    ref = torch.arange(offset, offset + spec.numel).reshape(shape)
    assert e.covers_spec()
    for i in ops:
        if ref.numel() == 0 or ref.shape[0] < 2:
            break
        e, ref = e.apply(OPS[i]), OPS[i](ref)
        assert tuple(e.shape) == tuple(ref.shape)
        assert torch.equal(e.tensor(), ref)
        assert e.first() == int(ref.reshape(-1)[0])
        full = ref.numel() == spec.numel and torch.equal(ref.reshape(-1).sort().values, torch.arange(offset, offset + spec.numel))
        assert e.covers_spec() == (full and e.symbolic)


def test_layout_ops_stay_symbolic_and_copies_materialize():
    e = Elems.of(ParamSpec("w", (3, 4), 10))
    assert e.t().symbolic and e[1:].symbolic and e.unsqueeze(0).expand(2, 3, 4).symbolic
    assert not e.t().reshape(-1).symbolic  # a copy: offsets materialized
    assert e.t().step(0) == 1 and e.t().step(1) == 4


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(1, 3), lo=st.integers(-5, 0), hi=st.integers(1, 6))
def test_unique_rows_matches_torch(rows, cols, lo, hi):
    t = torch.randint(lo, hi, (rows, cols), generator=torch.Generator().manual_seed(rows * 7 + cols))
    assert torch.equal(unique_rows(t), t.unique(dim=0))
