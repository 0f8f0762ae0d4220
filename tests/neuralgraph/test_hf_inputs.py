"""Inputs from a Hugging Face config: a decoder with cross-attention used alone gets encoder states."""

from __future__ import annotations

import pytest
import torch
import transformers

import neuralgraph as ng
from neuralgraph.inputs import example_inputs_for

transformers.logging.set_verbosity_error()

_DECODER = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                encoder_ffn_dim=20, decoder_ffn_dim=20, vocab_size=50, pad_token_id=1)


@pytest.mark.parametrize("model_type,extra,key", [
    ("bart", {"max_position_embeddings": 32}, "encoder_hidden_states"),
    ("whisper", {"num_mel_bins": 8, "max_source_positions": 16, "max_target_positions": 32}, "encoder_outputs"),
])
def test_a_decoder_alone_gets_encoder_states_and_verifies(model_type, extra, key) -> None:
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **_DECODER, **extra)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    inputs = example_inputs_for(model)
    states = inputs[key][0] if key == "encoder_outputs" else inputs[key]
    assert states.shape == (2, inputs["input_ids"].shape[1], 16)
    graph = ng.convert(model)  # no inputs given: the cross-attention weights are reached
    report = ng.verify(model, graph, trials=2)
    assert report and report.bad_detected == report.bad_trials > 0, report
    assert any("encoder_attn" in name for name in graph.param_names)


def test_a_decoder_without_cross_attention_gets_no_encoder_states() -> None:
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=8, n_layer=1, n_head=2, vocab_size=20))
    assert "encoder_hidden_states" not in example_inputs_for(model)
