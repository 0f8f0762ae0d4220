"""The permutation-symmetry experiment (``analysis.symmetry``) on tiny layers.

Tiny configurations (width 8, 2-4 heads, n = 60) keep the default run to a few seconds per
configuration; each configuration is run once per module and shared by the tests.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("sklearn")

from analysis.symmetry import (  # noqa: E402
    BAD_KINDS,
    LABEL_COLORS,
    SYMMETRY_ARCHS,
    SymmetryResult,
    supported_archs,
    symmetry_experiment,
)
from neuralgraph import load_params  # noqa: E402

N = 60


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> SymmetryResult:
    return symmetry_experiment("gpt2", width=8, heads=2, n=N, seed=0, out_dir=tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def llama_gqa(tmp_path_factory) -> SymmetryResult:
    return symmetry_experiment(
        "llama", width=8, heads=4, kv_heads=2, n=N, seed=1, out_dir=tmp_path_factory.mktemp("llama")
    )


@pytest.fixture(params=["gpt2", "llama_gqa"])
def result(request) -> SymmetryResult:
    return request.getfixturevalue(request.param)


def _outputs(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
    first = out[0] if isinstance(out, (tuple, list)) else getattr(out, "last_hidden_state", out)
    return first.reshape(-1)


def test_supported_archs_are_registered_attention_converters():
    assert set(supported_archs()) <= set(SYMMETRY_ARCHS)
    assert {"gpt2", "llama", "bert", "vit"} <= set(supported_archs())


def test_result_fields(result):
    assert result.n == N and result.labels.shape == (N,) and result.deviations.shape == (N,)
    assert set(result.accuracy) == {"correct", "naive"} == set(result.heldout_accuracy)
    assert all(0.0 <= v <= 1.0 for v in (*result.accuracy.values(), *result.heldout_accuracy.values()))
    for name in ("correct", "naive"):
        assert result.embeddings[name].shape == (N, 64)  # mean edge state + mean node state, 32 each
        assert np.isfinite(result.embeddings[name]).all()
    assert set(result.kinds) <= {"declared-symmetry", *BAD_KINDS}
    table = result.table()
    for word in ("correct", "naive", "fit-on-all", "held-out", "n good", "n bad"):
        assert word in table


def test_labels_are_measured_by_running_the_model(result):
    # both classes occur, and labels are exactly "output change within tolerance"
    assert set(np.unique(result.labels)) == {0, 1}
    assert np.array_equal(result.labels, (result.deviations <= result.tolerance).astype(int))
    # re-run the model on a few samples of each label: the label follows the real outputs
    reference = _outputs(result.model, result.inputs)
    moved = copy.deepcopy(result.model)
    for label in (0, 1):
        for i in np.flatnonzero(result.labels == label)[:2]:
            load_params(moved, result.permuted_params(int(i)))
            change = float((_outputs(moved, result.inputs) - reference).abs().max() / reference.abs().max())
            assert (change <= result.tolerance) == bool(label), (i, change)
    # function-changing permutations change the outputs by far more than the tolerance
    assert result.deviations[result.labels == 0].min() > 100 * result.tolerance


def test_correct_graph_separates_naive_does_not(result):
    assert result.accuracy["correct"] >= 0.95
    assert result.heldout_accuracy["correct"] >= 0.9
    # every function-preserving permutation gives an isomorphic graph: same embedding up to round-off
    assert result.distances["correct"][result.labels == 1].max() < 1e-12
    assert result.distances["correct"][result.labels == 0].min() > 1e-9
    # the naive graph maps some function-changing permutations onto the original graph
    naive_same = result.distances["naive"] < 1e-12
    assert (naive_same & (result.labels == 0)).any()
    assert result.accuracy["naive"] < result.accuracy["correct"]


def test_gqa_naive_graph_is_the_expanded_multi_head_one(llama_gqa):
    assert "multi-head" in llama_gqa.naive_graph
    assert llama_gqa.kv_heads == 2


def test_figure_written_and_colored_by_label(result):
    import matplotlib.image
    from matplotlib.colors import to_rgba

    png = result.figure
    assert png is not None and png.is_file() and png.stat().st_size > 0
    assert png.with_suffix(".pdf").is_file()
    pixels = matplotlib.image.imread(png)
    assert pixels.var() > 0
    assert set(result.colors) == {0, 1} and result.colors == LABEL_COLORS
    for name in ("correct", "naive"):
        faces = result.point_colors[name]
        assert faces.shape == (N, 4)
        for label in (0, 1):
            want = np.array(to_rgba(result.colors[label]))[:3]
            assert np.allclose(faces[result.labels == label, :3], want)


def test_reproducible(gpt2):
    again = symmetry_experiment("gpt2", width=8, heads=2, n=N, seed=0, figure=False)
    assert again.figure is None
    assert np.array_equal(again.labels, gpt2.labels)
    assert np.array_equal(again.kinds, gpt2.kinds)
    assert again.accuracy == gpt2.accuracy and again.heldout_accuracy == gpt2.heldout_accuracy
    for name in ("correct", "naive"):
        assert np.array_equal(again.embeddings[name], gpt2.embeddings[name])


def test_other_seed_other_samples(gpt2):
    other = symmetry_experiment("gpt2", width=8, heads=2, n=N, seed=1, figure=False)
    assert not np.array_equal(other.embeddings["correct"], gpt2.embeddings["correct"])


@pytest.mark.parametrize("arch", ["mlp", "sequential", "modded_nanogpt", "no-such-arch"])
def test_unsupported_arch(arch):
    with pytest.raises(ValueError, match="supports the attention converters"):
        symmetry_experiment(arch, width=8, heads=2, n=10, figure=False)


@pytest.mark.parametrize("arch", ["gpt2", "bert", "vit"])
def test_kv_heads_only_for_llama(arch):
    with pytest.raises(ValueError, match="kv_heads"):
        symmetry_experiment(arch, width=8, heads=2, kv_heads=1, n=10, figure=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(width=8, heads=4, kv_heads=3), "kv_heads"),
        (dict(width=8, heads=3), "split into 3 heads"),
        (dict(width=8, heads=2, bad_kinds=("nonsense",)), "bad_kinds"),
        (dict(width=8, heads=2, node_features="random"), "node_features"),
    ],
)
def test_invalid_configurations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        symmetry_experiment("llama", n=10, figure=False, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "vit", "nanogpt"])
def test_other_attention_archs(arch, tmp_path):
    result = symmetry_experiment(arch, width=8, heads=2, n=N, seed=0, out_dir=tmp_path)
    assert set(np.unique(result.labels)) == {0, 1}
    assert result.accuracy["correct"] >= 0.95
    assert result.accuracy["naive"] < result.accuracy["correct"]


@pytest.mark.slow
def test_rope_qk_permutation_is_an_automorphism_that_changes_the_function():
    # query/key dimensions permuted within heads: GPT-2 keeps its function, a RoPE layer does not,
    # and either way the graph cannot tell (the permutation is an automorphism of the graph)
    for arch, kv, preserved in (("gpt2", None, 1), ("llama", 2, 0)):
        r = symmetry_experiment(arch, width=8, heads=4, kv_heads=kv, n=20, bad_kinds=("qk-within-head",),
                                figure=False)
        moved = r.kinds == "qk-within-head"
        assert (r.labels[moved] == preserved).all()
        assert r.distances["correct"][moved].max() < 1e-12
