import pytest
import torch

import neuralgraph as ng

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


def llama(heads=4, kv_heads=2, lm_head=True, **overrides):
    cfg = dict(vocab_size=7, hidden_size=8, intermediate_size=6, num_hidden_layers=2, num_attention_heads=heads,
               num_key_value_heads=kv_heads, max_position_embeddings=16, attn_implementation="eager")
    cfg.update(overrides)
    cls = transformers.LlamaForCausalLM if lm_head else transformers.LlamaModel
    return cls(transformers.LlamaConfig(**cfg)).eval()


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa2", "gqa4"])
def test_verifier_passes_for_gqa_ratios(heads, kv_heads):
    report = ng.verify(llama(heads, kv_heads, attention_bias=True, mlp_bias=True), trials=3)
    assert report, str(report)
    bad = [c.description for c in report.checks if c.kind == "bad"]
    assert any("into another segment" in d for d in bad)  # a unit moved across heads
    assert any("gate_proj" in d for d in bad) and any("up_proj" in d for d in bad)  # gate and up apart
    assert any("q_proj" in d and "dst side" in d for d in bad)  # queries permuted, keys not
    if kv_heads > 1:  # with one key/value head no symmetry moves the keys
        assert any("k_proj" in d and "src side" in d for d in bad)  # keys permuted, queries not


def test_gqa_graph_structure():
    g = ng.convert(llama(4, 2))
    a = "model.layers.0.self_attn."
    sizes = {grp.name: grp.size for grp in g.groups}
    assert sizes[a + "q_heads"] == 4 and sizes[a + "kv_heads"] == 2
    assert sizes[a + "q"] == sizes[a + "o"] == 8 and sizes[a + "k"] == sizes[a + "v"] == 4
    # gate and up share an edge: two feature slots
    gate_up = g.block("model.layers.0.mlp.gate_up")
    assert gate_up.feat_size == 2 and g.max_feat_size == 2
    theta = torch.randn(g.num_params)
    assert torch.equal(g.to_params(g.edge_features(theta)), theta)
    # no query/key symmetry inside a head is declared (RoPE)
    assert not any(s.groups == (a + "q",) or (a + "q" in s.groups and s.segments > 1) for s in g.symmetries)


def test_multi_head_llama_shares_query_key_units_and_base_model_keeps_stream():
    g = ng.convert(llama(2, 2, lm_head=False))
    assert "layers.0.self_attn.qk" in [grp.name for grp in g.groups]
    assert not any("stream.0" in s.groups for s in g.symmetries)
    assert ng.verify(llama(2, 2, lm_head=False), g, trials=2)


def test_mistral_and_qwen2_dispatch_to_llama():
    for cfg_cls, cls in ((transformers.MistralConfig, transformers.MistralForCausalLM),
                         (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)):
        model = cls(cfg_cls(vocab_size=7, hidden_size=8, intermediate_size=6, num_hidden_layers=1, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=16, attn_implementation="eager")).eval()
        g = ng.convert(model)
        assert g.arch == "llama"
        assert ng.verify(model, g, trials=2)


def test_naive_graph_needs_multi_head():
    assert ng.convert(llama(2, 2), naive=True).max_feat_size == 3
    with pytest.raises(ng.UnsupportedModelError, match="naive graph needs as many key/value heads"):
        ng.convert(llama(4, 2), naive=True)


def test_llama_1b_on_meta_device():
    cfg = transformers.LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                   num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg)
    g = ng.convert(model)
    assert g.num_params == 1_235_814_400
    assert "edge_index" not in g.__dict__
    assert g.pos.shape == (g.num_nodes, 8)
    block = g.layers(lpe=0)[3]
    assert block.num_params == 60_821_504
