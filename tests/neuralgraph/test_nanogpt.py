"""nanoGPT and modded-nanogpt: the model definitions and their converters (neuralgraph.arch.nanogpt)."""

import copy
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import neuralgraph as ng
import neuralgraph.build as ngb
from neuralgraph import edge_types as et
from neuralgraph.arch import nanogpt as conv
from neuralgraph.isomorphism import wl_fingerprint
from neuralgraph.models import modded_nanogpt as M
from neuralgraph.models import nanogpt as N
from neuralgraph.permute import is_automorphism
from neuralgraph.testing import assert_function_invariant, permute_params


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny float64 models: intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nano(**overrides):
    cfg = dict(block_size=4, vocab_size=6, n_layer=2, n_head=2, n_embd=8)
    cfg.update(overrides)
    return N.GPT(N.GPTConfig(**cfg)).eval()


def modded(**overrides):
    cfg = dict(vocab_size=7, num_layers=2, num_heads=2, model_dim=16, max_seq_len=5, head_dim=8,
               num_value_embeds=1, vocab_multiple=4)
    cfg.update(overrides)
    return M.GPT(M.GPTConfig(**cfg)).eval()


def specs(model):
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def randomized(model, seed=0):
    """A float64 copy with random parameters (the zero-initialized projections would hide everything)."""
    gen = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_((torch.randn(p.shape, generator=gen, dtype=p.dtype) + 0.5) / (p[0].numel() ** 0.5))
            else:
                p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)
    return model


class Probe:
    """A model's graph after permuting node groups: whether the permutation is an automorphism and
    keeps the graph's fingerprint; the function is checked with ``neuralgraph.testing``."""

    def __init__(self, model, graph):
        self.model, self.graph = model, graph
        self.theta = ng.flatten_params(model)
        self.x = torch.randint(model.config.vocab_size, (4, 4), generator=torch.Generator().manual_seed(1))
        self.fp = self.fingerprint(self.theta)

    def fingerprint(self, theta):
        g = self.graph
        return wl_fingerprint(g.edge_index, g.edge_type, g.edge_features(theta), g.num_nodes, g.pos_w)

    def __call__(self, perms):
        """(graph automorphism?, same fingerprint?)"""
        perms = {k: torch.tensor(v) for k, v in perms.items()}
        return is_automorphism(self.graph, perms), self.fingerprint(permute_params(self.graph, self.theta, perms)) == self.fp

    def keeps(self, perms):
        """The outputs move by at most 1e-12 of their scale."""
        assert_function_invariant(self.model, self.graph, perm=perms, inputs=(self.x,), rtol=1e-12)

    def changes(self, perms):
        """The outputs move by more than 1e-4 of their scale."""
        with pytest.raises(AssertionError, match="outputs changed"):
            assert_function_invariant(self.model, self.graph, perm=perms, inputs=(self.x,), rtol=1e-4)


def swap(n, *pairs):
    perm = list(range(n))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


# ------------------------------------------------------------------------------------- models
def test_nanogpt_model_has_karpathys_parameters():
    model = nano(n_layer=1)
    h = "transformer.h.0."
    assert specs(model) == [
        ("transformer.wte.weight", (6, 8)), ("transformer.wpe.weight", (4, 8)),
        (h + "ln_1.weight", (8,)), (h + "ln_1.bias", (8,)),
        (h + "attn.c_attn.weight", (24, 8)), (h + "attn.c_attn.bias", (24,)),
        (h + "attn.c_proj.weight", (8, 8)), (h + "attn.c_proj.bias", (8,)),
        (h + "ln_2.weight", (8,)), (h + "ln_2.bias", (8,)),
        (h + "mlp.c_fc.weight", (32, 8)), (h + "mlp.c_fc.bias", (32,)),
        (h + "mlp.c_proj.weight", (8, 32)), (h + "mlp.c_proj.bias", (8,)),
        ("transformer.ln_f.weight", (8,)), ("transformer.ln_f.bias", (8,)),
    ]
    assert model.lm_head.weight is model.transformer.wte.weight
    assert not any(n.endswith("bias") for n, _ in specs(nano(bias=False)))
    ids = torch.randint(6, (2, 4))
    assert model(ids).shape == (2, 4, 6)
    logits, loss = model(ids, ids)
    assert logits.shape == (2, 4, 6) and loss.ndim == 0
    assert model.double()(ids).dtype == torch.float64


def test_modded_model_has_the_speedrun_layout():
    with torch.device("meta"):
        model = M.GPT(M.GPTConfig())
    shapes = dict(specs(model))
    assert [n for n, _ in specs(model)][:6] == [
        "skip_weights", "embed.weight", "value_embeds.0.weight", "value_embeds.1.weight", "value_embeds.2.weight",
        "blocks.0.lambdas",
    ]
    assert shapes["skip_weights"] == (6,) and shapes["embed.weight"] == (50257, 768)
    assert shapes["blocks.0.attn.qkv_w"] == (3, 768, 768) and shapes["blocks.0.attn.lambdas"] == (2,)
    assert shapes["blocks.0.attn.c_proj.weight"] == (768, 768)
    assert shapes["blocks.0.mlp.c_fc.weight"] == (3072, 768) and shapes["blocks.0.mlp.c_proj.weight"] == (768, 3072)
    assert shapes["lm_head.weight"] == (50304, 768) and "blocks.7.attn.qkv_w" not in shapes
    assert model.ve_layers == [0, 1, 2] + [None] * 6 + [0, 1, 2]
    freqs = M.rotary_frequencies(128)
    assert freqs.shape == (64,) and bool((freqs[:32] > 0).all()) and bool((freqs[32:] == 0).all())
    small = modded(num_layers=3)
    ids = torch.randint(7, (2, 5))
    assert small(ids).shape == (2, 5, 8) and small.double()(ids).dtype == torch.float64
    with pytest.raises(ValueError, match="must agree"):
        M.GPT(M.GPTConfig(num_layers=1, num_heads=2, model_dim=6, head_dim=4))


# ---------------------------------------------------------------------------------- verifier
@pytest.mark.parametrize("example", [conv.sample_nanogpt, conv.sample_modded_nanogpt], ids=["nanogpt", "modded"])
@settings(max_examples=8)
@given(seed=st.integers(0, 2**32 - 1))
def test_verifier_passes_on_random_configs(example, seed):
    model = example(random.Random(seed))
    report = ng.verify(model, trials=3, seed=seed % 1000)
    assert report, str(report)
    assert all(c.isomorphic is False for c in report.checks if c.kind == "bad")


@pytest.mark.parametrize(
    "model, q_block",
    [(nano(n_head=2), "transformer.h.0.attn.c_attn.q"), (modded(num_heads=2), "blocks.0.attn.qkv_w.q")],
    ids=["nanogpt", "modded"],
)
def test_bad_permutations_include_cross_head_moves_and_unequal_query_key(model, q_block):
    report = ng.verify(model, trials=4)
    assert report, str(report)
    bad = [c for c in report.checks if c.kind == "bad"]
    assert all(c.passed and c.isomorphic is False for c in bad)
    assert any(c.description.startswith("move one unit") and any("attn.qk" in g for g in c.groups) for c in bad)
    assert any(f"block '{q_block}'" in c.description for c in bad)  # queries left unpermuted, keys permuted
    assert any(f"block '{q_block[:-1]}k'" in c.description for c in bad)


def test_naive_nanogpt_graph_fails_only_on_cross_head_moves():
    model = nano(n_head=2)
    naive = ng.convert(model, naive=True)
    assert naive.max_feat_size == 3 and not any(g.role == "head" for g in naive.groups)
    report = ng.verify(model, naive, trials=4)
    assert not report
    assert {f.description.split(" ")[0] for f in report.failures} == {"move"}
    assert all(f.isomorphic for f in report.failures)


def test_naive_modded_graph_sees_neither_heads_nor_rotary_pairs():
    model = randomized(modded(num_value_embeds=0))
    naive = ng.convert(model, naive=True, lpe=0)
    assert naive.max_feat_size == 3 and not any(g.role in ("head", "position") for g in naive.groups)
    assert ng.verify(model, naive, trials=3)  # what it declares holds (no attention symmetry: RoPE)
    full, blind = Probe(model, ng.convert(model, lpe=0)), Probe(model, naive)
    for perm in (swap(16, (2, 10)), swap(16, (0, 2))):  # a free unit to the other head; rotating <-> free
        blind.changes({"blocks.0.attn.qkv": perm})
        assert blind({"blocks.0.attn.qkv": perm})[1]  # the function changes, the naive graph does not
        full.changes({"blocks.0.attn.qk": perm})
        assert full({"blocks.0.attn.qk": perm}) == (False, False)


def test_rope_leaves_only_unrotated_query_key_dimensions_free():
    """head_dim 8, half-truncated RoPE: pairs (0,4) and (1,5) rotate, (2,6) and (3,7) do not."""
    model = randomized(modded())
    graph = ng.convert(model, lpe=0)
    probe = Probe(model, graph)
    assert graph.group("blocks.0.attn.rotary").size == 2
    for pairs in ([(2, 3)], [(2, 6)], [(3, 7), (10, 11)]):  # unrotated dimensions of a head: free
        probe.keeps({"blocks.0.attn.qk": swap(16, *pairs)})
        assert probe({"blocks.0.attn.qk": swap(16, *pairs)}) == (True, True)
    for pairs in ([(0, 1)], [(0, 2)], [(0, 4)], [(0, 4), (1, 5)], [(2, 10)]):  # frequencies, pair order, heads
        probe.changes({"blocks.0.attn.qk": swap(16, *pairs)})
        assert probe({"blocks.0.attn.qk": swap(16, *pairs)}) == (False, False)
    declared = {g for s in graph.symmetries for g in s.groups if s.segments > 1}
    assert "blocks.0.attn.qk" not in declared and "blocks.0.attn.v" in declared
    full_rope = ng.convert(randomized(modded(truncated_rope=False)), lpe=0)
    assert full_rope.group("blocks.0.attn.rotary").size == 4


def test_shared_value_embedding_couples_blocks():
    model = randomized(modded(num_layers=2, num_value_embeds=1))
    assert model.ve_layers == [0, 0]
    graph = ng.convert(model, lpe=0)
    coupled = {frozenset(s.groups) for s in graph.symmetries}
    assert frozenset({"blocks.0.attn.v", "blocks.1.attn.v", "value_embeds.0"}) in coupled
    probe = Probe(model, graph)
    within = swap(16, (0, 3), (9, 12))
    together = {"blocks.0.attn.v": within, "blocks.1.attn.v": within, "value_embeds.0": within}
    probe.keeps(together)
    assert probe(together) == (True, True)
    probe.changes({"blocks.0.attn.v": within, "value_embeds.0": within})
    assert not probe({"blocks.0.attn.v": within, "value_embeds.0": within})[1]


def test_scalars_sit_on_gate_nodes():
    graph = ng.convert(modded(num_layers=3, num_value_embeds=1), lpe=0)
    for name, count in (("skip_weights", 1), ("blocks.0.lambdas", 2), ("blocks.2.attn.lambdas", 2)):
        (block,) = [b for b in graph.blocks if b.view is not None and b.view.name == name]
        assert (block.kind, block.edge_type) == ("star", et.BIAS)
        assert (block.src.group, block.dst.group) == (name, name + ".gates")
        assert graph.group(name + ".gates").size == count
    # block 0 mixes x0 with itself: both gates read stream.0
    sources = {b.dst.lo for b in graph.blocks if b.src.group == "stream.0" and b.dst.group == "blocks.0.lambdas.gates"}
    assert sources == {0, 1}
    # the middle block of three has no value embedding: its second attention lambda gates nothing
    assert not any(b.src.group == "blocks.1.attn.lambdas.gates" and b.src.lo == 1 for b in graph.blocks)


def test_blocks_without_attention_and_unused_value_embeddings():
    model = modded(num_layers=2, num_heads=3, head_dim=4, model_dim=12, skip_attention=(0, 1), num_value_embeds=1)
    graph = ng.convert(model, lpe=0)
    assert not any(g.role in ("head", "query_key") for g in graph.groups)
    assert ("value_embeds.0",) in [s.groups for s in graph.symmetries]  # read by no block: free
    assert ng.verify(model, graph, trials=3)
    odd = modded(num_layers=1, model_dim=5, num_value_embeds=0, skip_attention=(0,))
    assert "skip_weights" not in dict(specs(odd)) and ng.verify(odd, trials=2)


# ------------------------------------------------------------------------------ shape lists
CASES = [
    ("nanogpt", nano, {"n_head": 2}),
    ("nanogpt", lambda: nano(bias=False, n_layer=1), {"n_head": 2}),
    ("modded_nanogpt", lambda: modded(num_layers=3, num_value_embeds=2, skip_attention=(1,)), {"n_head": 2}),
    ("modded_nanogpt", lambda: modded(truncated_rope=False, head_dim=2, num_heads=4, model_dim=8),
     {"n_head": 4, "truncated_rope": False}),
]


@pytest.mark.parametrize("arch, make, config", CASES)
@pytest.mark.parametrize("naive", [False, True])
def test_shape_list_gives_the_module_graph_and_exact_round_trips(arch, make, config, naive):
    model = make()
    g = ng.convert(model, naive=naive)
    assert g.arch == arch
    s = ng.convert(specs(model), arch=arch, config=config, naive=naive)
    assert [(x.name, x.size, x.role) for x in g.groups] == [(x.name, x.size, x.role) for x in s.groups]
    assert [(b.name, b.kind, b.edge_type) for b in g.blocks] == [(b.name, b.kind, b.edge_type) for b in s.blocks]
    assert torch.equal(g.edge_index, s.edge_index) and torch.equal(g.edge_type, s.edge_type)
    assert torch.allclose(g.pos, s.pos) and torch.equal(g.pos_w, s.pos_w)
    theta = torch.randn(g.num_params, dtype=torch.float64)
    assert torch.equal(g.edge_features(theta), s.edge_features(theta))
    assert torch.equal(g.to_params(g.edge_features(theta)), theta)
    states = torch.randn(g.num_params, 4, dtype=torch.float64)
    feats = s.edge_features(states)
    assert all(torch.equal(s.to_params(feats, state=t), states[:, t]) for t in range(4))


def test_real_size_layouts_convert_from_their_shapes():
    with torch.device("meta"):
        speedrun, gpt2 = M.GPT(M.GPTConfig()), N.GPT(N.GPTConfig())
    g = ng.convert(specs(speedrun), arch="modded-nanogpt", config={"n_head": 6}, lpe=0)
    assert g.num_params == sum(p.numel() for p in speedrun.parameters())
    assert g.group("blocks.0.attn.rotary").size == 32 and "blocks.7.attn.heads" not in [x.name for x in g.groups]
    assert g.group("logits").size == 50304 and g.group("skip_weights.gates").size == 6
    n = ng.convert(gpt2, lpe=0)
    assert n.arch == "nanogpt" and n.num_params == 124475904


def _replace(pairs, name, shape=None, drop=False):
    out = []
    for n, s in pairs:
        if n == name:
            if drop:
                continue
            s = shape
        out.append((n, s))
    return out


def test_bad_inputs_name_the_parameter():
    m, n = specs(modded()), specs(nano())
    cfg = {"n_head": 2}
    with pytest.raises(ng.UnsupportedModelError, match="number of attention heads is not known.*n_head"):
        ng.convert(m, arch="modded_nanogpt")
    with pytest.raises(ng.UnsupportedModelError, match="number of attention heads is not known"):
        ng.convert(n, arch="nanogpt")
    with pytest.raises(ng.ParameterMismatchError, match=r"'blocks.0.attn.qkv_w' has shape \(3, 16, 15\)"):
        ng.convert(_replace(m, "blocks.0.attn.qkv_w", (3, 16, 15)), arch="modded_nanogpt", config=cfg)
    with pytest.raises(ng.ParameterMismatchError, match=r"'blocks.1.lambdas' has shape \(3,\)"):
        ng.convert(_replace(m, "blocks.1.lambdas", (3,)), arch="modded_nanogpt", config=cfg)
    with pytest.raises(ng.ParameterMismatchError, match="'transformer.h.1.mlp.c_proj.weight'"):
        ng.convert(_replace(n, "transformer.h.1.mlp.c_proj.weight", (8, 31)), arch="nanogpt", config=cfg)
    with pytest.raises(ng.UnsupportedModelError, match="'blocks.0.attn.gain' is not part of the modded-nanogpt"):
        ng.convert(m + [("blocks.0.attn.gain", (2,))], arch="modded_nanogpt", config=cfg)
    with pytest.raises(ng.UnsupportedModelError, match="'transformer.h.0.attn.bias' is not part of the nanoGPT"):
        ng.convert(n + [("transformer.h.0.attn.bias", (1, 1, 4, 4))], arch="nanogpt", config=cfg)
    with pytest.raises(ng.UnsupportedModelError, match="no parameter 'transformer.h.0.ln_2.weight'"):
        ng.convert(_replace(n, "transformer.h.0.ln_2.weight", drop=True), arch="nanogpt", config=cfg)
    with pytest.raises(ng.UnsupportedModelError, match="'blocks.0.attn.qkv_w'.*do not split into 3 heads"):
        ng.convert(m, arch="modded_nanogpt", config={"n_head": 3})
    with pytest.raises(ng.UnsupportedModelError, match="'blocks.0.attn.qkv_w'.*divisible by 4"):
        ng.convert(m, arch="modded_nanogpt", config={"n_head": 8})  # head size 2: no half-truncated RoPE
    with pytest.raises(ng.UnsupportedModelError, match="block 0 is missing"):
        ng.convert([(k.replace("blocks.0.", "blocks.2."), s) for k, s in m], arch="modded_nanogpt", config=cfg)


def test_convert_picks_the_converter_by_class():
    assert ng.convert(nano(), lpe=0).arch == "nanogpt"
    assert ng.convert(modded(), lpe=0).arch == "modded_nanogpt"
    assert ngb.get_converter("modded-nanogpt").name == "modded_nanogpt"
    assert ng.convert(modded()).pos.shape[1] == 8
