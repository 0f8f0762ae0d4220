"""Symmetries of traced Hugging Face models that the dataflow reaches only through a table or a
router: heads permute with the columns of a relative-position bias table (T5, MPNet), and experts
permute with their router's rows (mixture of experts). Each test permutes a tiny model directly:
the declared symmetry keeps its outputs, moving the experts or heads without the router rows or
the table's columns changes them."""

from __future__ import annotations

import pytest
import torch

import neuralgraph as ng
from neuralgraph.verify_model import working_copy

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

TEXT = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2, vocab_size=40,
            max_position_embeddings=32, pad_token_id=0, bos_token_id=1, eos_token_id=2)
MOE = dict(TEXT, num_key_value_heads=2, num_local_experts=3, num_experts=3, n_routed_experts=3,
           num_experts_per_tok=2, moe_intermediate_size=8, output_router_logits=False)

CONFIGS = {
    "mixtral": MOE,
    "qwen2_moe": dict(MOE, shared_expert_intermediate_size=12, decoder_sparse_step=1),
    "qwen3_moe": dict(MOE, head_dim=8, decoder_sparse_step=1),
    "olmoe": MOE,
    "granitemoe": MOE,
    "gpt_oss": dict(MOE, num_local_experts=4, head_dim=8, sliding_window=8),
    "deepseek_v3": dict(MOE, n_routed_experts=4, num_local_experts=4, n_shared_experts=1, n_group=2, topk_group=1, first_k_dense_replace=0,
                        kv_lora_rank=8, q_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8,
                        head_dim=4, num_key_value_heads=2),
    "t5": dict(d_model=16, d_kv=8, num_heads=2, d_ff=24, num_layers=2, num_decoder_layers=1, vocab_size=40,
               relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1,
               decoder_start_token_id=0),
    "mpnet": dict(TEXT, num_hidden_layers=2),
}
MOE_TYPES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe", "gpt_oss", "deepseek_v3"]


def tiny(model_type: str):
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **CONFIGS[model_type])
    return transformers.AutoModel.from_config(config).eval()


def heads_of(graph, what: str):
    """The whole-head symmetries whose head group is named with ``what`` (a router's weight)."""
    return [s for s in graph.symmetries if type(s).__name__ == "PermutableHeads" and what in s.heads]


def outcome(model, graph, sym, skip=(), seed=0) -> float:
    """The relative output change when ``sym`` is permuted (leaving out ``skip``) on a float64 copy."""
    _, runner, theta, reference = working_copy(model, graph, graph.meta["example_inputs"], seed, torch.float64)
    sizes = {g.name: g.size for g in graph.groups}
    perms = sym.draw(sizes, torch.Generator().manual_seed(seed))
    moved = runner.outputs(ng.permute_params(graph, theta, perms, skip=skip), perms)
    return float((moved - reference).abs().max() / reference.abs().max())


def router_side(graph, sym):
    """The router's weight block, seen from the router's units: moving experts without it moves
    them without their router rows."""
    block = next(b for b in graph.blocks if b.view is not None and b.dst.group == sym.heads and b.src.group != sym.heads)
    return block.name, "dst"


@pytest.fixture(scope="module", params=MOE_TYPES)
def moe(request):
    model = tiny(request.param)
    return request.param, model, ng.convert(model, lpe=0)


def test_experts_permute_with_their_router_rows(moe):
    model_type, model, graph = moe
    routers = [s for s in graph.symmetries if repr(s) in graph.meta["routed_experts"]]
    assert routers, f"{model_type}: no expert symmetry declared ({graph.meta.get('dropped_symmetries')})"
    for sym in routers:
        assert "experts" in " ".join(sym.members) and graph.group(sym.heads).size in (3, 4)
        assert outcome(model, graph, sym) < 1e-9, "experts reordered with their router rows keep the outputs"
        assert outcome(model, graph, sym, skip=[router_side(graph, sym)]) > 1e-6, \
            "experts reordered without their router rows change the outputs"


def test_units_still_permute_inside_each_expert(moe):
    model_type, _, graph = moe
    routers = [s for s in graph.symmetries if repr(s) in graph.meta["routed_experts"]]
    inside = [s for s in graph.symmetries if type(s).__name__ == "Permutable" and s.segments == graph.group(routers[0].heads).size
              and set(s.groups) <= set(routers[0].members)]
    assert inside or model_type == "gpt_oss"  # GPT-OSS's interleaved gate/up halves tell its units apart


def test_shared_experts_stay_out_of_the_routed_experts():
    graph = ng.convert(tiny("qwen2_moe"), lpe=0)
    routed = [m for s in graph.symmetries if repr(s) in graph.meta["routed_experts"] for m in s.members]
    assert routed and not any("shared_expert" in m for m in routed)
    assert any("shared_expert" in g for s in graph.symmetries for g in s.groups)  # its own units still permute


def test_grouped_routing_keeps_experts_inside_their_group():
    """DeepSeek-V3 picks expert groups first (n_group=2, topk_group=1): experts only move inside their group."""
    model = tiny("deepseek_v3")
    graph = ng.convert(model, lpe=0)
    sym, = [s for s in graph.symmetries if repr(s) in graph.meta["routed_experts"]]
    assert sym.within == 2
    sizes = {g.name: g.size for g in graph.groups}
    across = type(sym)(sym.heads, sym.members, within=1)
    _, runner, theta, reference = working_copy(model, graph, graph.meta["example_inputs"], 0, torch.float64)
    swap = across.expand(torch.tensor([2, 1, 0, 3]), sizes)  # expert 0 <-> expert 2: across the groups
    moved = runner.outputs(ng.permute_params(graph, theta, swap), swap)
    assert float((moved - reference).abs().max()) > 1e-6
    assert [b.name for b in graph.buffers] == ["layers.0.mlp.gate.e_score_correction_bias"]


def test_expert_symmetry_is_dropped_where_it_cannot_be_checked(monkeypatch):
    """The routing convention is checked on the model's function, or not claimed: here the model
    counts as too large for the check at conversion."""
    from neuralgraph.trace import function_check

    monkeypatch.setattr(function_check, "MAX_PARAMS", 0)
    graph = ng.convert(tiny("mixtral"), lpe=0)
    assert not graph.meta.get("routed_experts") and not heads_of(graph, "mlp.gate")
    assert any("mlp.gate" in s for s in graph.meta["dropped_symmetries"])
    assert any(type(s).__name__ == "Permutable" and s.segments == 3 for s in graph.symmetries)  # inside experts: kept


@pytest.mark.parametrize("model_type", ["t5", "mpnet"])
def test_heads_permute_with_the_relative_position_table(model_type):
    model = tiny(model_type)
    graph = ng.convert(model, lpe=0)
    assert not graph.meta.get("dropped_symmetries")
    table = next(b for b in graph.blocks if "relative_attention_bias" in b.name)
    sym, = [s for s in graph.symmetries if type(s).__name__ == "PermutableHeads" and s.heads == table.dst.group]
    assert len(sym.members) == 4, "one table for both layers: their heads move together"
    assert outcome(model, graph, sym) < 1e-9
    assert outcome(model, graph, sym, skip=[(table.name, "dst")]) > 1e-6, "heads moved without their table columns"
