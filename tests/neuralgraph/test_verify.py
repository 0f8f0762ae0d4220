import pytest
import torch
from torch import nn

import neuralgraph as ng
from neuralgraph.examples import mlp
from neuralgraph.isomorphism import wl_fingerprint
from neuralgraph.permute import is_automorphism, node_permutation
from neuralgraph.testing import assert_function_invariant, permute_params
from neuralgraph.verify import FLOAT32_RTOL


def _fingerprint(g, theta):
    return wl_fingerprint(g.edge_index, g.edge_type, g.edge_features(theta), g.num_nodes, g.pos_w)


def test_fingerprint_is_invariant_to_node_relabelling():
    g = ng.convert(mlp((3, 4, 2)), lpe=0)
    theta = torch.randn(g.num_params, dtype=torch.float64)
    perm = torch.randperm(g.num_nodes)
    feats = g.edge_features(theta)
    order = torch.randperm(g.num_edges)
    a = wl_fingerprint(g.edge_index, g.edge_type, feats, g.num_nodes)
    b = wl_fingerprint(perm[g.edge_index][:, order], g.edge_type[order], feats[order], g.num_nodes)
    assert a == b
    theta2 = theta.clone()
    theta2[0] += 1e-12
    assert _fingerprint(g, theta) != _fingerprint(g, theta2)


def test_good_permutation_is_automorphism_and_keeps_function():
    model = mlp((3, 6, 2))
    g = ng.convert(model, lpe=0)
    perm = torch.tensor([1, 0, 3, 2, 5, 4])
    perms = {"0": perm}
    assert is_automorphism(g, perms)
    assert torch.equal(node_permutation(g, perms)[g.group("0").start : g.group("0").stop], perm + g.group("0").start)
    assert_function_invariant(model, g, perm=perms, inputs=torch.randn(4, 3))
    swapped = ng.flatten_params(model).clone()
    swapped[[0, 1, 2, 3, 4, 5]] = swapped[[3, 4, 5, 0, 1, 2]]  # rows 0 and 1 of '0.weight' trade places
    assert torch.equal(permute_params(g, ng.flatten_params(model), {"0": torch.tensor([1, 0, 2, 3, 4, 5])})[:18],
                       swapped[:18])


def test_report_content():
    report = ng.verify(mlp((3, 6, 6, 2)), trials=4)
    assert report and report.good_trials == 4 and report.bad_trials >= 4
    assert report.good_passed == 4 and report.bad_detected == report.bad_trials
    assert report.worst_good_deviation < 1e-12 and report.smallest_bad_deviation > 1e-4
    text = str(report)
    assert "PASSED" in text and "round trip exact" in text


def test_no_symmetry_is_reported_as_a_note():
    report = ng.verify(nn.Sequential(nn.Linear(3, 2)))
    assert report and report.good_trials == 0
    assert "no permutable group" in str(report)


def test_user_inputs_and_meta_models():
    model = mlp((3, 4, 2))
    assert ng.verify(model, inputs=torch.randn(7, 3), trials=2)
    with torch.device("meta"):
        meta = mlp((3, 4, 2))
    with pytest.raises(ValueError, match="meta device"):
        ng.verify(meta)
    # converting a meta model needs no weights at all
    g = ng.convert(meta)
    assert g.num_params == 3 * 4 + 4 + 4 * 2 + 2


def test_graph_for_another_model_is_refused():
    with pytest.raises(ng.ParameterMismatchError, match="other parameters"):
        ng.verify(mlp((3, 4, 2)), ng.convert(mlp((3, 5, 2))))


def test_block_without_effect_is_reported_inert_not_failed():
    # zero inputs: the first layer's weights multiply nothing, so leaving them out of a permutation
    # cannot change the outputs; its bias and the next layer still expose every bad permutation
    model = mlp((3, 6, 6, 2))
    report = ng.verify(model, inputs=torch.zeros(5, 3), trials=4)
    assert report, str(report)
    inert = [c for c in report.checks if c.kind == "inert"]
    assert inert and all("block '0.weight'" in c.detail for c in inert)
    assert all(c.isomorphic is False for c in inert)  # the graph did change
    assert report.bad_trials > 0 and report.bad_detected == report.bad_trials
    assert "inert: permute" in str(report)
    # with real inputs the same block is tested like any other
    assert ng.verify(model, inputs=torch.randn(5, 3), trials=4).inert_trials == 0


class _Ignores(nn.Sequential):
    """Same parameters as an MLP, but the output does not depend on them."""

    def forward(self, x):
        return x[..., :2] * 2.0


def test_a_model_ignoring_its_parameters_fails_verification():
    model = _Ignores(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    report = ng.verify(model, ng.convert(mlp((3, 4, 2)), lpe=0), inputs=torch.randn(5, 3), trials=2)
    assert not report
    assert report.inert_trials > 0 and report.bad_trials == 1
    assert "nothing was tested" in str(report)


def test_block_by_block_edge_hashes_equal_hashes_of_the_whole_feature_matrix():
    import numpy as np

    from neuralgraph.isomorphism import edge_hashes, graph_edge_hashes

    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    g = ng.convert(model, lpe=0)
    theta = torch.randn(g.num_params, dtype=torch.float64)
    assert g.max_feat_size == 9  # the 3x3 kernel widens every edge; the 1x1 and linear blocks are padded
    whole = edge_hashes(g.edge_type, g.edge_features(theta))
    assert np.array_equal(graph_edge_hashes(g, theta), whole)


def test_round_trip_block_by_block_matches_the_whole_path(monkeypatch):
    import importlib

    verify_module = importlib.import_module("neuralgraph.verify")  # the module, not the function

    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(3, 2))
    g = ng.convert(model, lpe=0)
    theta = torch.randn(g.num_params, dtype=torch.float64)
    assert verify_module._round_trip(g, theta)
    monkeypatch.setattr(verify_module, "_WHOLE_FEATURES", 0)
    assert verify_module._round_trip(g, theta)


def _fingerprint_models():
    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    from neuralgraph.models.nanogpt import GPT, GPTConfig

    gpt = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8))
    return [conv, gpt]


@pytest.mark.parametrize("which", [0, 1])
def test_block_wise_fingerprint_equals_the_edge_list_fingerprint(which, monkeypatch):
    import neuralgraph.isomorphism as iso
    from neuralgraph.isomorphism import graph_edge_hashes, graph_fingerprint, wl_fingerprint

    g = ng.convert(_fingerprint_models()[which], lpe=0)
    theta = torch.randn(g.num_params, dtype=torch.float64)
    theta[::7] = 0.0  # zero features: trailing zeros are not hashed, in both paths
    edge_list = wl_fingerprint(g.edge_index, g.edge_type, None, g.num_nodes, g.pos_w,
                               edge_hash=graph_edge_hashes(g, theta))
    assert graph_fingerprint(g, theta) == edge_list
    monkeypatch.setattr(iso, "_FLAT_EDGES", 0)  # the block-by-block path that large graphs take
    assert graph_fingerprint(g, theta) == edge_list
    monkeypatch.setattr(iso, "_CHUNK", 3)  # dense blocks in chunks of a few rows
    assert graph_fingerprint(g, theta) == edge_list
    other = theta.clone()
    other[0] += 1.0
    assert graph_fingerprint(g, other) != edge_list


def test_block_layout_automorphism_agrees_with_the_edge_list_check():
    from neuralgraph.permute import _keeps_every_block, is_automorphism

    g = ng.convert(_fingerprint_models()[1], lpe=0)
    gen = torch.Generator().manual_seed(0)
    sizes = {x.name: x.size for x in g.groups}
    for sym in g.symmetries:
        perms = sym.draw(sizes, gen)
        assert _keeps_every_block(g, perms) and is_automorphism(g, perms)
    # swapping the first and last unit of every group: the fast path proves no more than the edge list check
    for group in g.groups:
        perm = torch.arange(group.size)
        perm[[0, -1]] = perm[[-1, 0]]
        swap = {group.name: perm}
        assert not _keeps_every_block(g, swap) or is_automorphism(g, swap)


def test_large_graph_sampling_tries_trials_of_each_kind_and_says_what_it_left(monkeypatch):
    import importlib

    verify_module = importlib.import_module("neuralgraph.verify")
    model = _fingerprint_models()[1]
    everything = ng.verify(model, trials=2)
    monkeypatch.setattr(verify_module, "EXHAUSTIVE_EDGES", 0)
    sampled = ng.verify(model, trials=2)
    assert everything and sampled
    assert everything.good_trials > 2 and sampled.good_trials == 2
    assert sampled.bad_trials + sampled.inert_trials == 2 < everything.bad_trials + everything.inert_trials
    assert any("exhaustive=True" in n for n in sampled.notes)
    assert ng.verify(model, trials=2, exhaustive=True).good_trials == everything.good_trials


@pytest.mark.parametrize("trials", [0, -3, 1.5, True])
def test_trials_must_be_a_positive_integer(trials):
    with pytest.raises(ValueError, match="trials must be a positive integer"):
        ng.verify(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)), trials=trials)


def test_a_model_that_cannot_run_in_float64_is_checked_in_float32():
    class Floor(nn.Module):  # a float32 constant in the forward, as XGLM's attention mask floor
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 5), nn.Linear(5, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(torch.maximum(h, torch.full((), torch.finfo(h.dtype).min)))

    model = Floor()
    report = ng.verify(model, ng.convert(model, example_inputs=torch.randn(4, 3)))
    assert report, report
    assert report.rtol == FLOAT32_RTOL
    assert any("float32" in n for n in report.notes)


def test_many_ways_to_break_are_capped_round_robin_over_the_symmetries(monkeypatch):
    import importlib

    verify_module = importlib.import_module("neuralgraph.verify")
    model = _fingerprint_models()[1]
    everything = ng.verify(model, trials=2)
    tried = everything.bad_trials + everything.inert_trials
    monkeypatch.setattr(verify_module, "EXHAUSTIVE_CANDIDATES", 3)
    capped = ng.verify(model, trials=2)
    assert capped and tried > 3
    assert capped.bad_trials + capped.inert_trials == 3
    assert capped.good_trials == everything.good_trials  # each symmetry still tried alone
    assert any("round-robin" in n for n in capped.notes)
    assert ng.verify(model, trials=2, exhaustive=True).bad_trials + ng.verify(model, trials=2, exhaustive=True).inert_trials == tried


def test_float64_copies_stay_float64_where_the_code_asks_for_float32():
    from neuralgraph.float64_mode import StayInFloat64

    x = torch.randn(3, 4, dtype=torch.float64)
    with StayInFloat64():
        assert x.float().dtype == torch.float64
        assert x.to(torch.float32).dtype == torch.float64
        assert x.to("cpu", torch.float16).dtype == torch.float64
        assert x.to(dtype=torch.bfloat16).dtype == torch.float64
        assert x.type_as(torch.zeros(1)).dtype == torch.float64
        assert torch.nn.functional.softmax(x, -1, dtype=torch.float32).dtype == torch.float64
        assert x.softmax(-1, dtype=torch.float32).dtype == torch.float64
        assert x.to(torch.int64).dtype == torch.int64  # not a float narrowing: as written
        assert torch.zeros(2).float().dtype == torch.float32  # float32 tensors are left alone
        assert torch.zeros(2, dtype=torch.float32).to(torch.float16).dtype == torch.float16
    assert x.float().dtype == torch.float32  # only inside the mode


def test_llama_with_biases_passes_with_float64_round_off_and_a_wide_margin():
    """HF Llama computes RMSNorm and softmax in float32; in a float64 copy that set the round-off of
    good permutations to ~1e-7, under which some bad permutations hid (a false alarm)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=8, num_key_value_heads=2, intermediate_size=32,
                                      num_hidden_layers=2, vocab_size=20, attention_bias=True, mlp_bias=True,
                                      attn_implementation="eager")
    for seed in range(2):
        torch.manual_seed(seed)
        report = ng.verify(transformers.LlamaForCausalLM(config).eval(), seed=seed, trials=2)
        assert report, report
        assert report.worst_good_deviation < 1e-13
        assert report.smallest_bad_deviation > 10 * report.change_threshold


def test_a_block_the_outputs_are_flat_in_is_inert_not_a_false_alarm():
    """Hidden size 2: each layer norm keeps only the sign of a difference, so a bad permutation
    inside the MLP moves the outputs by ~1e-12 while large noise (which flips signs) moves them a
    lot; a small change of the block moves them by ~0: the check cannot be made, not failed."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=2, num_attention_heads=1, intermediate_size=5, num_hidden_layers=1,
                                    image_size=8, patch_size=4, num_channels=3, attn_implementation="eager")
    torch.manual_seed(2)
    report = ng.verify(transformers.ViTModel(config).eval(), seed=2)
    assert report, report
    assert any("flat in" in c.detail for c in report.checks if c.kind == "inert")
