import pytest
import torch

import neuralgraph as ng
from neuralgraph import edge_types as et
from neuralgraph.examples import fm16

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


def _gpt2(**cfg):
    base = dict(n_embd=6, n_layer=3, n_head=2, vocab_size=7, n_positions=4)
    base.update(cfg)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**base))


def test_layer_subgraphs_partition_the_parameters():
    model = _gpt2()
    g = ng.convert(model)
    parts = g.layers()
    assert len(parts) == 4  # three blocks, then embeddings + final norm
    assert sorted(n for p in parts for n in p.param_names) == sorted(g.param_names)
    theta = ng.flatten_params(model)
    where = g.param_slices()
    for part in parts:
        sub = torch.cat([theta[where[n]] for n in part.param_names])
        feats = part.edge_features(sub)
        assert torch.equal(part.to_params(feats), sub)
        assert int((part.edge_type == et.SELF_LOOP).sum()) == part.num_nodes
    block = parts[1]
    assert any(b.edge_type == et.RESIDUAL for b in block.blocks) and any(b.edge_type == et.HEAD for b in block.blocks)
    assert {grp.role for grp in block.groups} >= {"stream", "query_key", "value", "head", "hidden", "bias"}
    assert block.pos.shape == (block.num_nodes, 8)


def test_block_features_equal_the_whole_graphs():
    model = _gpt2(n_layer=2)
    g = ng.convert(model)
    theta = ng.flatten_params(model)
    whole = g.edge_features(theta)
    where = g.param_slices()
    part = g.layers()[0]
    feats = part.edge_features(torch.cat([theta[where[n]] for n in part.param_names]))
    for b in part.blocks:
        if b.view is not None:
            full = g.block(b.name)
            assert torch.equal(whole[full.edge_start : full.edge_stop], feats[b.edge_start : b.edge_stop])


def test_subgraph_of_a_convnet_layer():
    g = ng.convert(fm16())
    part = g.subgraph(["fc.2.weight", "fc.2.bias"])
    assert part.num_params == 32 * 16 * 9 + 32
    assert [grp.name for grp in part.groups] == ["fc.0", "fc.2.bias", "fc.2"]
    with pytest.raises(KeyError, match="no parameters"):
        g.subgraph(["nope"])


def test_meta_gpt2_124m_converts_without_weights_or_edge_index():
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    g = ng.convert(model)
    assert g.num_params == 124_439_808
    assert "edge_index" not in g.__dict__  # nothing materialized
    assert g.pos.shape == (g.num_nodes, 8) and torch.isfinite(g.pos).all()
    first = g.layers(lpe=0)[0]
    assert first.num_params == 7_087_872
