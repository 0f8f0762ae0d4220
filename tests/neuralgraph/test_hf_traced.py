"""Hugging Face families read off the trace: each brings a structure the traced converter must
hold (or refuse) — shared QK-norm gains, fused gate/up projections, a layer shared across depth,
a learned attention-pooling probe, two towers, a mask token, patch merging, relative position
biases. Tiny configs built offline; every graph must pass ``verify``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import neuralgraph as ng
from neuralgraph.inputs import batch_within

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

TEXT = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3, vocab_size=50,
            max_position_embeddings=32, pad_token_id=0, bos_token_id=1, eos_token_id=2)
VISION = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3, image_size=16,
              patch_size=4, num_channels=3)

CONFIGS = {
    # QK-norm: one RMSNorm gain over head dimensions, shared by every head
    "qwen3": dict(TEXT, num_key_value_heads=1, head_dim=6),
    # fused gate_up_proj, chunked into gate and up halves
    "phi3": dict(TEXT, num_key_value_heads=3),
    # one layer applied at every depth (head nodes joined across applications)
    "albert": dict(TEXT, embedding_size=12),
    # relative position bias: a table with one column per head, tied to the head nodes
    "mpnet": dict(TEXT),
    # mixture of experts, traced with the eager experts (one linear per expert on its tokens)
    "mixtral": dict(TEXT, num_key_value_heads=1, num_local_experts=3, num_experts_per_tok=2),
    # a shared expert behind a one-neuron sigmoid gate
    "qwen2_moe": dict(TEXT, num_key_value_heads=3, num_experts=3, num_experts_per_tok=2, moe_intermediate_size=16,
                      shared_expert_intermediate_size=24, decoder_sparse_step=1),
    # a weight-normed positional convolution (gains per kernel position) and a learned vector for
    # masked time steps, reached through mask_time_indices
    "wav2vec2": dict(hidden_size=24, intermediate_size=40, num_hidden_layers=1, num_attention_heads=3,
                     conv_dim=[8, 8], conv_stride=[4, 2], conv_kernel=[8, 3], num_conv_pos_embeddings=8,
                     num_conv_pos_embedding_groups=3, vocab_size=20),
    # a learned mask token, reached through bool_masked_pos
    "dinov2": dict(VISION, mlp_ratio=2),
    # Swin's patch merging reads each neuron at 4 positions: kernel-like edges
    "swin": dict(embed_dim=12, depths=[1, 1], num_heads=[2, 3], window_size=2, image_size=16, patch_size=2,
                 mlp_ratio=2.0, num_channels=3),
    # two towers and logit_scale; SigLIP's attention-pooling probe read by in_proj
    "clip": dict(text_config=dict(TEXT, max_position_embeddings=8), vision_config=VISION, projection_dim=8),
    "siglip": dict(text_config=dict(TEXT, max_position_embeddings=8), vision_config=VISION),
}


def tiny(model_type: str) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **CONFIGS[model_type])
    return transformers.AutoModel.from_config(config).eval()


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_traced_family_converts_and_verifies(model_type):
    model = tiny(model_type)
    graph = ng.convert(model, lpe=0)
    assert graph.meta["converter"] == "traced"
    report = ng.verify(model, graph, trials=2)
    assert report, report
    assert graph.symmetries, "a family with attention and MLPs has symmetries"


def test_shared_qk_norm_fixes_head_dimensions_but_keeps_heads():
    graph = ng.convert(tiny("qwen3"), lpe=0)
    heads = [s for s in graph.symmetries if type(s).__name__ == "PermutableHeads"]
    assert heads, "the gain is shared by every head: heads still permute"
    names = {g for s in graph.symmetries if type(s).__name__ == "Permutable" for g in s.groups}
    assert not any("q_proj.qk" in n for n in names), "dimensions inside a head carry their own gain (and RoPE)"


def test_layer_shared_across_depth_has_one_head_group():
    graph = ng.convert(tiny("albert"), lpe=0)
    heads = [s for s in graph.symmetries if type(s).__name__ == "PermutableHeads"]
    assert len(heads) == 1


def test_symmetry_the_graph_cannot_carry_is_dropped_and_recorded():
    from neuralgraph import edge_types as et
    from neuralgraph.build import GraphBuilder
    from neuralgraph.trace.selfcheck import keep_structural_symmetries

    b = GraphBuilder([])
    x, h, y = b.group("x", 2, role="input"), b.group("h", 3, role="hidden"), b.group("y", 2, role="output")
    b.connect(x, h[:2], et.RESIDUAL)  # unit 2 of h is reached otherwise than units 0 and 1
    b.connect(h, y, et.RESIDUAL)
    b.permutable(h)
    graph = keep_structural_symmetries(b.build(lpe=0))
    assert graph.meta.get("dropped_symmetries") and not graph.symmetries


def test_relative_position_table_ties_heads_across_layers():
    graph = ng.convert(tiny("mpnet"), lpe=0)
    assert not graph.meta.get("dropped_symmetries")
    heads = [s for s in graph.symmetries if type(s).__name__ == "PermutableHeads"]
    assert len(heads) == 1 and len(heads[0].members) == 4, "one shared table: both layers' heads move together"


def test_mask_token_inputs_only_where_the_model_has_one():
    graph = ng.convert(tiny("dinov2"), lpe=0)
    mask = graph.meta["example_inputs"]["bool_masked_pos"]
    assert mask.dtype == torch.bool and mask.shape == (2, 16) and mask.any() and not mask.all()
    from neuralgraph.inputs import example_inputs_for

    vit = transformers.ViTModel(transformers.ViTConfig(**VISION)).eval()  # no mask token: no mask
    assert "bool_masked_pos" not in example_inputs_for(vit)


def test_two_tower_model_gets_ids_and_pixels():
    from neuralgraph.inputs import example_inputs_for

    inputs = example_inputs_for(tiny("clip"))
    assert {"input_ids", "pixel_values"} <= set(inputs)


def test_flatten_of_a_feature_map_becomes_kernel_edges():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 5), nn.ReLU(), nn.Linear(5, 2))
    graph = ng.convert(model, example_inputs=torch.randn(2, 2, 5, 5), lpe=0)
    assert graph.max_feat_size == 9  # each channel read at its 3x3 positions
    assert ng.verify(model, graph)


def test_uneven_positions_are_refused():
    class Uneven(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre, self.fc = nn.Linear(2, 2), nn.Linear(3, 2)

        def forward(self, x):  # hidden neuron 0 read twice, neuron 1 once
            h = self.pre(x)
            return self.fc(torch.cat([h[:, :1], h[:, :1] * 2.0, h[:, 1:2]], dim=-1))

    with pytest.raises(ng.UnsupportedModelError, match="more positions than others"):
        ng.convert(Uneven(), example_inputs=torch.randn(2, 2), arch="traced")


def test_batch_within_keeps_logits_in_budget():
    assert batch_within(32, 10) == 8
    assert batch_within(32, 1024 * 50257) == 1
    assert batch_within(4, 2**22) == 4


def test_selective_scan_families_are_refused_by_name():
    config = transformers.AutoConfig.for_model("mamba", hidden_size=16, num_hidden_layers=1, state_size=4,
                                               intermediate_size=32, vocab_size=20, time_step_rank=2)
    model = transformers.AutoModel.from_config(config).eval()
    with pytest.raises(ng.UnsupportedModelError, match="selective scan"):
        ng.convert(model)


def test_expert_units_permute_inside_each_expert_and_the_model_keeps_its_experts_implementation():
    model = tiny("mixtral")
    chosen = model.config._experts_implementation
    graph = ng.convert(model, lpe=0)
    assert model.config._experts_implementation == chosen
    experts = [s for s in graph.symmetries if type(s).__name__ == "Permutable" and "experts" in s.groups[0]]
    assert len(experts) == 2 and all(s.segments == 3 for s in experts)  # inside each of 3 experts, both layers
    routed = [s for s in graph.symmetries if repr(s) in graph.meta["routed_experts"]]
    assert len(routed) == 2  # and the experts permute with their router's rows


class SliceAssembled(nn.Module):
    """Keys assembled in slices of an empty tensor, as DeepSeek-V3 does."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 3), nn.Linear(4, 2), nn.Linear(5, 2)

    def forward(self, x):
        y = x.new_empty(*x.shape[:-1], 5)
        y[..., :3].copy_(torch.relu(self.a(x)))
        y[..., 3:].copy_(torch.tanh(self.b(x)))
        return self.out(y)


def test_a_tensor_filled_slice_by_slice_is_followed():
    torch.manual_seed(0)
    model = SliceAssembled()
    graph = ng.convert(model, example_inputs=torch.randn(3, 4), lpe=0)
    assert graph.meta["converter"] == "traced"
    assert {s.groups[0] for s in graph.symmetries} == {"a", "b"}  # both hidden layers still permute
    assert ng.verify(model, graph)


def test_reading_a_half_filled_tensor_is_refused():
    class Half(SliceAssembled):
        def forward(self, x):
            y = x.new_empty(*x.shape[:-1], 5)
            y[..., :3].copy_(self.a(x))
            return self.out(y * 1.0)

    with pytest.raises(ng.UnsupportedModelError, match="changed in place"):
        ng.convert(Half(), example_inputs=torch.randn(3, 4), arch="traced")


def test_weight_norm_per_output_neuron_is_refused_with_the_way_out():
    model = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(3, 4)), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ng.UnsupportedModelError, match="remove_parametrizations"):
        ng.convert(model, example_inputs=torch.randn(2, 3), arch="traced")


def test_head_whose_base_model_is_named_otherwise_is_traced():
    # LlamaForQuestionAnswering keeps its Llama under `transformer.`: the hand-written layout cannot
    # find its parameters, and the traced converter takes over
    config = transformers.LlamaConfig(**dict(TEXT, num_key_value_heads=1))
    model = transformers.LlamaForQuestionAnswering(config).eval()
    graph = ng.convert(model, lpe=0)
    assert graph.meta["converter"] == "traced"
    assert ng.verify(model, graph, trials=2)


def test_encoder_decoder_inputs_end_each_sequence_with_one_eos():
    from neuralgraph.inputs import example_inputs_for

    config = transformers.BartConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                     decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, vocab_size=5,
                                     max_position_embeddings=16, eos_token_id=2, pad_token_id=1, bos_token_id=0)
    model = transformers.BartForSequenceClassification(config).eval()
    ids = example_inputs_for(model)["input_ids"]
    assert bool((ids[:, -1] == 2).all()) and bool(((ids == 2).sum(1) == 1).all())
    graph = ng.convert(model, lpe=0)  # the head reads the state at <eos>: it runs and converts
    assert ng.verify(model, graph, trials=2)


def test_per_head_constants_the_trace_cannot_see_are_refused_not_a_wrong_graph():
    """MPT adds ALiBi's fixed per-head slopes (not parameters) to attention scores: its heads look
    interchangeable to the trace but are not; the functional check at conversion refuses it."""
    config = transformers.MptConfig(d_model=16, n_heads=2, n_layers=1, vocab_size=20, max_seq_len=16, expansion_ratio=2)
    with pytest.raises(ng.UnsupportedModelError, match="does not hold for its function"):
        ng.convert(transformers.MptModel(config).eval(), lpe=0)
