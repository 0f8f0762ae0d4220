import pytest
import torch

import neuralgraph as ng
from neuralgraph import edge_types as et

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


def tiny(lm_head=True, **overrides):
    cfg = dict(n_embd=6, n_layer=2, n_head=2, vocab_size=5, n_positions=3)
    cfg.update(overrides)
    cls = transformers.GPT2LMHeadModel if lm_head else transformers.GPT2Model
    return cls(transformers.GPT2Config(**cfg)).eval()


def test_matches_reference_except_key_bias(reference):
    """Isomorphic to the authors' GPT-2 graph, except the documented K-bias placement."""
    ref = torch.load(reference / "graph_gpt2_e6.pt", weights_only=True)
    model = tiny()
    assert [(n, tuple(p.shape)) for n, p in model.named_parameters()] == [tuple(p) for p in ref["params"]]
    g = ng.convert(model)
    assert (g.num_nodes, g.num_edges, g.num_params) == (ref["num_nodes"], ref["num_edges"], ref["n_params"])
    assert g.edge_type_counts() == ref["edge_type_counts"]
    ours = g.edge_features(torch.arange(1, g.num_params + 1, dtype=torch.float64))
    key_bias = set()
    for name, _, _, start, stop in ref["edge_blocks"]:
        if name.endswith("attn.c_attn.k.bias"):
            key_bias |= set(range(start, stop))
    # node correspondence from every parameter edge outside the key biases
    theirs = {}
    for e in range(ref["num_edges"]):
        if ref["edge_type"][e] < et.RESIDUAL and e not in key_bias:
            theirs[int(ref["edge_attr_index_plus1"][e, 0])] = (int(ref["edge_index"][0, e]), int(ref["edge_index"][1, e]), int(ref["edge_type"][e]))
    mine = {}
    for e in range(g.num_edges):
        if g.edge_type[e] < et.RESIDUAL:
            mine[int(ours[e, 0])] = (int(g.edge_index[0, e]), int(g.edge_index[1, e]), int(g.edge_type[e]))
    mapping = {}
    for p, (s, d, t) in theirs.items():
        s2, d2, t2 = mine[p]
        assert t == t2
        assert mapping.setdefault(s, s2) == s2 and mapping.setdefault(d, d2) == d2
    # the K-bias nodes: map them via their parameters
    for e in key_bias:
        p = int(ref["edge_attr_index_plus1"][e, 0])
        mapping.setdefault(int(ref["edge_index"][0, e]), mine[p][0])
    # head nodes carry no parameter: map each through the query-key units it joins
    head_of = {int(d): int(s) for s, d, t in zip(*g.edge_index.tolist(), g.edge_type.tolist()) if t == et.HEAD}
    for s, d, t in zip(*ref["edge_index"].tolist(), ref["edge_type"].tolist()):
        if t == et.HEAD:
            assert mapping.setdefault(s, head_of[mapping[d]]) == head_of[mapping[d]]
    assert len(mapping) == g.num_nodes and len(set(mapping.values())) == g.num_nodes
    perm = torch.tensor([mapping[i] for i in range(g.num_nodes)])
    # every edge except the key biases corresponds, with its type and value
    keep = torch.tensor([e not in key_bias for e in range(ref["num_edges"])])
    ref_edges = sorted(zip(perm[ref["edge_index"][0, keep]].tolist(), perm[ref["edge_index"][1, keep]].tolist(),
                           ref["edge_type"][keep].tolist(), ref["edge_attr_index_plus1"][keep, 0].tolist()))
    kb = {int(ours[e, 0]) for e in range(g.num_edges) if g.edge_type[e] == et.BIAS and any(
        g.block(b.name).edge_start <= e < g.block(b.name).edge_stop for b in g.blocks if b.name.endswith("c_attn.k.bias"))}
    our_edges = sorted((s, d, t, f) for s, d, t, f in zip(g.edge_index[0].tolist(), g.edge_index[1].tolist(),
                                                          g.edge_type.tolist(), ours[:, 0].tolist()) if not (t == et.BIAS and int(f) in kb))
    assert ref_edges == our_edges
    # ours: key biases land on the query-key units
    for b in g.blocks:
        if b.name.endswith("c_attn.k.bias"):
            assert b.dst.group.endswith("attn.qk")
    assert torch.equal(g.pos_w[perm], ref["pos_w"])


def test_verifier_passes_and_naive_graph_confuses_heads():
    model = tiny(n_embd=8, n_head=2)
    assert ng.verify(model, trials=4)
    naive = ng.convert(model, naive=True)
    assert naive.max_feat_size == 3 and not any(g.role == "head" for g in naive.groups)
    report = ng.verify(model, naive, trials=4)
    assert not report
    assert {f.description.split(" ")[0] for f in report.failures} == {"move"}  # only cross-head moves
    assert all(f.isomorphic for f in report.failures)


def test_gpt2_without_head_keeps_the_stream_fixed():
    g = ng.convert(tiny(lm_head=False))
    assert not any("stream.0" in s.groups for s in g.symmetries)
    assert ng.verify(tiny(lm_head=False), g, trials=2)


def test_untied_head_gets_output_tokens():
    model = tiny(tie_word_embeddings=False)
    g = ng.convert(model)
    assert g.group("logits").size == 5 and g.group("logits").tokens
    assert ng.verify(model, g, trials=2)


def test_shape_list_with_config():
    model = tiny()
    specs = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    g = ng.convert(specs, arch="gpt2", config={"n_head": 2})
    assert torch.equal(g.edge_index, ng.convert(model).edge_index)
    with pytest.raises(ng.UnsupportedModelError, match="number of attention heads is not known"):
        ng.convert(specs, arch="gpt2")


def test_hf_model_type_without_a_hand_written_converter_is_traced():
    torch.manual_seed(0)
    model = transformers.OPTForCausalLM(transformers.OPTConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, ffn_dim=16, vocab_size=10,
        max_position_embeddings=8, word_embed_proj_dim=8))
    graph = ng.convert(model, lpe=0)
    assert graph.meta["converter"] == "traced" and graph.symmetries
    report = ng.verify(model, graph, trials=2)
    assert report, str(report)


def test_head_the_hand_written_converter_does_not_know_is_traced():
    torch.manual_seed(0)
    model = transformers.GPT2ForTokenClassification(transformers.GPT2Config(
        n_embd=8, n_layer=1, n_head=2, vocab_size=10, n_positions=8, num_labels=3))
    graph = ng.convert(model, lpe=0)
    assert graph.meta["converter"] == "traced"
    report = ng.verify(model, graph, trials=2)
    assert report, str(report)


def test_heads_that_do_not_divide_the_width():
    specs = [(n, tuple(p.shape)) for n, p in tiny().named_parameters()]
    with pytest.raises(ng.UnsupportedModelError, match="width 6 does not split into 4 heads"):
        ng.convert(specs, arch="gpt2", config={"n_head": 4})


def test_state_dict_of_another_configuration():
    specs = [(n, tuple(p.shape)) for n, p in tiny().named_parameters()]
    # layer 1's attention taken from a wider model
    specs = [(n, (8, 24) if n == "transformer.h.1.attn.c_attn.weight" else s) for n, s in specs]
    with pytest.raises(ng.GraphConstructionError, match="transformer.h.1.attn.c_attn"):
        ng.convert(specs, arch="gpt2", config={"n_head": 2})
