"""Coverage of Hugging Face architectures: does ``neuralgraph`` convert and verify them?

For each of 56 ``model_type`` strings, a tiny model (under 1M parameters) is built offline from
``transformers.AutoConfig.for_model(model_type, **overrides)`` — a table of generic overrides
(width 32, 2 layers, 4 heads, ...) applied where the config has the attribute, plus per-type
overrides for families that need special values — once as the base model (``AutoModel``) and
once per common head that exists for its config (causal LM, masked LM, seq2seq LM, sequence /
token classification, question answering, image classification). Each (type, head) row then
times ``neuralgraph.convert(model, lpe=0)`` and ``neuralgraph.verify(model, graph, trials=2)``.

A row's result is ``passed`` or ``FAILED`` (the verifier's verdict), ``refused: ...`` (the
library raised a ``NeuralGraphError``: a deliberate refusal), ``crashed: ...`` (any other
exception), ``timeout`` (the row's subprocess ran past ``--timeout`` seconds) or ``build failed:
...`` (the tiny model itself could not be built: a bug of this script's config table). Each row
runs in its own subprocess, so a crash or a hang costs only that row.

    python benchmarks/hf_coverage.py                   # all 56 types, all heads; writes docs/results/hf_coverage.*
    python benchmarks/hf_coverage.py --heads base      # base models only (not written without --write)
    python benchmarks/hf_coverage.py --only gpt2,t5    # some types (not written without --write)
    python benchmarks/hf_coverage.py --only olmoe,hubert --heads base   # types beyond the 56 (generic overrides)
    python benchmarks/hf_coverage.py --quick           # gpt2, llama, bert, vit, t5, resnet base models, for CI
    python benchmarks/hf_coverage.py --arch traced     # force one converter (not written without --write)
    python benchmarks/hf_coverage.py --only t5,bart --update   # rerun some types, replace their rows in the table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from neuralgraph.cli_args import ArgumentParser, positive_float, positive_int

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"

TYPES = (
    "gpt2 llama mistral qwen2 bert vit gpt_neo gpt_neox gptj opt bloom falcon mixtral qwen2_moe qwen3 "
    "qwen3_moe gemma gemma2 gemma3_text phi phi3 olmo olmo2 stablelm starcoder2 cohere granite gpt_bigcode "
    "deepseek_v3 gpt_oss smollm3 mamba roberta xlm-roberta distilbert albert electra deberta-v2 modernbert "
    "mpnet t5 bart mbart whisper wav2vec2 deit dinov2 beit swin convnext resnet regnet mobilevit segformer "
    "clip siglip"
).split()

QUICK = ["gpt2", "llama", "bert", "vit", "t5", "resnet"]

HEADS = [  # auto class, in the order rows are listed; "base" is the first
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForSeq2SeqLM",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering",
    "AutoModelForImageClassification",
]

# Generic overrides: applied where the default config has the attribute and its default is not a
# list or dict (per-stage lists are per-type business). Aliases (n_embd / hidden_size) agree.
GENERIC: dict[str, Any] = {
    # width
    "hidden_size": 32, "n_embd": 32, "d_model": 32, "dim": 32, "embedding_size": 32,
    "word_embed_proj_dim": 32, "pooler_hidden_size": 32, "projection_dim": 16,
    # depth
    "num_hidden_layers": 2, "n_layer": 2, "n_layers": 2, "num_layers": 2, "num_decoder_layers": 2,
    "encoder_layers": 2, "decoder_layers": 2,
    # attention
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "num_heads": 4,
    "encoder_attention_heads": 4, "decoder_attention_heads": 4,
    "num_key_value_heads": 2, "num_kv_heads": 2, "head_dim": 8, "d_kv": 8,
    "query_pre_attn_scalar": 8, "local_attention": 16,
    # feed-forward
    "intermediate_size": 64, "n_inner": 64, "ffn_dim": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
    "d_ff": 64, "hidden_dim": 64, "ffn_hidden_size": 64, "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 64,
    # mixture of experts
    "num_local_experts": 4, "num_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
    # vocabulary, positions, special tokens (inside the small vocabulary)
    "vocab_size": 99, "max_position_embeddings": 64, "n_positions": 64, "original_max_position_embeddings": 64,
    "max_target_positions": 64, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    "decoder_start_token_id": 2, "cls_token_id": 1, "sep_token_id": 2,
    # images
    "image_size": 32, "patch_size": 8, "num_channels": 3,
}

TEXT_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "vocab_size": 99, "max_position_embeddings": 16, "pad_token_id": 0, "bos_token_id": 1,
              "eos_token_id": 2}
VISION_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "image_size": 32, "patch_size": 8, "num_channels": 3}

# Per-type overrides, applied after (and over) the generic ones.
PER_TYPE: dict[str, dict[str, Any]] = {
    "gpt_neo": {"attention_types": [[["global", "local"], 1]], "window_size": 8},
    "gptj": {"rotary_dim": 4},
    "codegen": {"rotary_dim": 4},
    "gemma3_text": {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 8},
    "deepseek_v3": {"num_key_value_heads": 4, "n_shared_experts": 1, "n_group": 1, "topk_group": 1,
                    "first_k_dense_replace": 1, "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 4,
                    "qk_nope_head_dim": 4, "v_head_dim": 8, "head_dim": 4, "moe_intermediate_size": 16},
    "gpt_oss": {"intermediate_size": 32, "sliding_window": 8},
    "mamba": {"expand": 2, "intermediate_size": 64, "state_size": 4, "time_step_rank": 4, "conv_kernel": 4},
    "whisper": {"num_mel_bins": 8, "max_source_positions": 16, "max_target_positions": 16,
                "classifier_proj_size": 16, "begin_suppress_tokens": None, "suppress_tokens": None},
    "wav2vec2": {"conv_dim": [16, 16], "conv_stride": [5, 2], "conv_kernel": [10, 3], "num_conv_pos_embeddings": 16,
                 "num_conv_pos_embedding_groups": 4, "codevector_dim": 16, "proj_codevector_dim": 16,
                 "num_codevectors_per_group": 8, "classifier_proj_size": 16, "output_hidden_size": 32,
                 "tdnn_dim": [16, 16], "tdnn_kernel": [3, 1], "tdnn_dilation": [1, 1], "xvector_output_dim": 16},
    "dinov2": {"mlp_ratio": 2},
    "beit": {"auxiliary_channels": 16, "pool_scales": [1, 2]},
    "swin": {"embed_dim": 16, "hidden_size": 32, "depths": [1, 1], "num_heads": [2, 4], "window_size": 4,
             "patch_size": 4, "mlp_ratio": 2.0},
    "convnext": {"hidden_sizes": [16, 32], "depths": [1, 1], "num_stages": 2, "patch_size": 4},
    "resnet": {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "layer_type": "basic"},
    "regnet": {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "groups_width": 8},
    "mobilevit": {"image_size": 64, "patch_size": 2, "hidden_sizes": [16, 24, 32],
                  "neck_hidden_sizes": [8, 8, 16, 16, 24, 24, 64], "aspp_out_channels": 16},
    "segformer": {"num_encoder_blocks": 2, "depths": [1, 1], "sr_ratios": [2, 1], "hidden_sizes": [16, 32],
                  "patch_sizes": [7, 3], "strides": [4, 2], "num_attention_heads": [1, 2], "mlp_ratios": [2, 2],
                  "decoder_hidden_size": 32},
    "clip": {"text_config": TEXT_TOWER, "vision_config": VISION_TOWER, "projection_dim": 16},
    "siglip": {"text_config": TEXT_TOWER, "vision_config": VISION_TOWER},
}

# Popular types beyond the 56 (``--beyond``: base models, their own table): decoders, encoders,
# encoder-decoders, vision and speech models, and a few whose layers have no neuron symmetry the
# library can state (Jamba's and RecurrentGemma's recurrences, RWKV's time mixing).
BEYOND = (
    "olmoe phimoe granitemoe jetmoe dbrx persimmon nemotron glm glm4 helium exaone4 codegen xglm biogpt mpt "
    "bitnet diffllama camembert data2vec-text ernie megatron-bert roformer funnel squeezebert xlm longformer "
    "big_bird pegasus marian m2m_100 blenderbot led mt5 umt5 longt5 switch_transformers levit poolformer pvt "
    "pvt_v2 convnextv2 focalnet efficientnet mobilenet_v2 vit_mae data2vec-vision yolos vit_msn bit swinv2 "
    "hiera ijepa cvt hubert wavlm data2vec-audio sew unispeech jamba rwkv recurrent_gemma llama4_text"
).split()

DROP = object()  # a per-type value that removes a generic override (Funnel sets depth by block_sizes)

_STAGES2 = {"hidden_sizes": [16, 32], "depths": [1, 1]}
PER_TYPE.update({
    "levit": {"hidden_sizes": [16, 32], "num_attention_heads": [2, 4], "depths": [1, 1], "key_dim": [8, 8],
              "mlp_ratio": [2, 2], "attention_ratio": [2, 2], "patch_size": 16, "image_size": 64,
              "down_ops": [["Subsample", 8, 2, 4, 2, 2]]},
    "poolformer": {**_STAGES2, "patch_sizes": [7, 3], "strides": [4, 2], "padding": [2, 1], "num_encoder_blocks": 2},
    "pvt": {**_STAGES2, "sequence_reduction_ratios": [2, 1], "patch_sizes": [4, 2], "strides": [4, 2],
            "num_attention_heads": [1, 2], "mlp_ratios": [2, 2], "num_encoder_blocks": 2},
    "pvt_v2": {**_STAGES2, "sr_ratios": [2, 1], "patch_sizes": [7, 3], "strides": [4, 2], "num_attention_heads": [1, 2],
               "mlp_ratios": [2, 2], "num_encoder_blocks": 2, "image_size": 32},
    "convnextv2": {**_STAGES2, "num_stages": 2, "patch_size": 4},
    "focalnet": {"embed_dim": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "focal_levels": [2, 2],
                 "focal_windows": [3, 3], "patch_size": 4},
    "efficientnet": {"image_size": 32, "width_coefficient": 0.25, "depth_coefficient": 0.25, "hidden_dim": 64,
                     "kernel_sizes": [3, 5], "in_channels": [32, 16], "out_channels": [16, 24], "strides": [1, 2],
                     "num_block_repeats": [1, 1], "expand_ratios": [1, 2]},
    "mobilenet_v2": {"image_size": 32, "depth_multiplier": 0.25},
    "bit": {**_STAGES2, "embedding_size": 16, "layer_type": "bottleneck", "num_groups": 4},
    "swinv2": {"embed_dim": 16, "depths": [1, 1], "num_heads": [2, 4], "window_size": 4, "patch_size": 4, "mlp_ratio": 2.0,
               "pretrained_window_sizes": [0, 0]},
    "hiera": {"embed_dim": 16, "image_size": [32, 32], "patch_size": [3, 3], "patch_stride": [2, 2], "patch_padding": [1, 1],
              "depths": [1, 1], "num_heads": [1, 2], "query_stride": [2, 2], "masked_unit_size": [4, 4],
              "masked_unit_attention": [True, False], "mlp_ratio": 2.0, "num_query_pool": 1},
    "cvt": {"embed_dim": [8, 16, 32], "num_heads": [1, 2, 4], "depth": [1, 2, 3], "mlp_ratio": [2.0, 2.0, 2.0],
            "drop_path_rate": [0.0, 0.0, 0.0]},
    "funnel": {"block_sizes": [1, 1], "num_hidden_layers": DROP},
    "dbrx": {"attn_config": {"kv_n_heads": 2, "rope_theta": 10000.0},
             "ffn_config": {"ffn_hidden_size": 32, "moe_num_experts": 4, "moe_top_k": 2}},
    "yolos": {"image_size": [32, 32], "num_detection_tokens": 4},
    "data2vec-vision": {"out_indices": [1, 2], "pool_scales": [1, 2], "auxiliary_channels": 16},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1,
              "mamba_d_state": 4, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": 4},
    "recurrent_gemma": {"lru_width": 32, "attention_window_size": 8, "block_types": ["recurrent", "attention"]},
    "longformer": {"attention_window": 8},
    "big_bird": {"attention_type": "original_full"},
})

for _speech in ("hubert", "wavlm", "data2vec-audio", "sew", "unispeech"):  # wav2vec2's feature encoder
    PER_TYPE.setdefault(_speech, PER_TYPE["wav2vec2"])

EAGER: set[str] = set()  # model types that need attn_implementation="eager"

MAX_PARAMS = 1_000_000


# --- building the tiny models ---------------------------------------------------------------------


def tiny_config(model_type: str):
    """The tiny config of ``model_type``: generic overrides where they apply, then per-type ones."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    kwargs = {k: v for k, v in GENERIC.items() if _settable_scalar(default, k)}
    kwargs.update(PER_TYPE.get(model_type, {}))
    return AutoConfig.for_model(model_type, **{k: v for k, v in kwargs.items() if v is not DROP})


def _settable_scalar(config, name: str) -> bool:
    """Whether ``config`` has a scalar (or unset) attribute ``name`` that a constructor argument sets."""
    attr = getattr(type(config), name, None)
    if isinstance(attr, property) and attr.fset is None:  # derived (e.g. Falcon's head_dim)
        return False
    return hasattr(config, name) and not isinstance(getattr(config, name), (list, tuple, dict))


def auto_class(name: str):
    import transformers

    return getattr(transformers, name)


def head_classes(config, heads: str = "all") -> list[tuple[str, type]]:
    """``(auto class name, model class)`` of each head that exists for ``config``, without repeats
    (Bart's masked-LM and seq2seq heads are one class)."""
    found: list[tuple[str, type]] = []
    for name in HEADS[:1] if heads == "base" else HEADS:
        mapping = auto_class(name)._model_mapping
        if type(config) in mapping:
            cls = mapping[type(config)]
            cls = cls[0] if isinstance(cls, (list, tuple)) else cls  # DeiT: with and without teacher
            if all(cls is not c for _, c in found):
                found.append((name, cls))
    return found


def build_model(model_type: str, auto: str):
    """The tiny ``auto`` model of ``model_type`` (the class the auto mapping names), seeded, in eval mode."""
    import torch

    config = tiny_config(model_type)
    (_, cls), = [h for h in head_classes(config) if h[0] == auto]
    extra = {"attn_implementation": "eager"} if model_type in EAGER else {}
    torch.manual_seed(0)
    model = cls._from_config(config, **extra).eval()
    params = sum(p.numel() for p in model.parameters())
    if params > MAX_PARAMS:
        raise ValueError(f"the tiny {cls.__name__} has {params:,} parameters (more than {MAX_PARAMS:,})")
    return model


# --- one row ----------------------------------------------------------------------------------------


def _first_line(text: str, limit: int = 160) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _original(exc: BaseException) -> BaseException:
    """The library error a library re-raise wraps: follow ``__context__`` through library errors
    whose message the outer one quotes (``convert`` appends the supported list; the traced fallback
    quotes the traced converter's error)."""
    from neuralgraph import NeuralGraphError

    inner = exc.__context__
    while isinstance(inner, NeuralGraphError) and str(inner) and str(inner) in str(exc):
        exc, inner = inner, inner.__context__
    return exc


def _innermost_library_frame(exc: BaseException) -> str:
    """``file:line (function)`` of the innermost traceback frame inside this checkout's neuralgraph
    package, in the original exception (see :func:`_original`)."""
    package = str(ROOT / "neuralgraph")
    frames = [f for f in traceback.extract_tb(_original(exc).__traceback__) if f.filename.startswith(package)]
    if not frames:
        return ""
    f = frames[-1]
    return f"{os.path.relpath(f.filename, ROOT)}:{f.lineno} ({f.name})"


def blank_row(model_type: str, auto: str, **values: Any) -> dict[str, Any]:
    """A row with every field, ``values`` filled in."""
    row: dict[str, Any] = {"type": model_type, "auto": auto, "head": "", "params": None, "converter": None,
                           "nodes": None, "edges": None, "symmetries": None, "result": "", "stage": "",
                           "detail": "", "reason": "", "where": "", "convert_s": None, "verify_s": None,
                           "seconds": None}
    row.update(values)
    return row


def run_row(model_type: str, auto: str, arch: str | None = None) -> dict[str, Any]:
    """Build, convert (with converter ``arch``, default: the library's choice) and verify one
    (type, head); never raises."""
    import neuralgraph

    if not Path(neuralgraph.__file__).resolve().is_relative_to(ROOT):
        raise RuntimeError(f"imported neuralgraph from {neuralgraph.__file__}, not from {ROOT}")
    row = blank_row(model_type, auto)
    try:
        model = build_model(model_type, auto)
    except Exception as exc:  # the config table's fault, not the library's
        row.update(result=f"build failed: {type(exc).__name__}: {_first_line(str(exc))}", stage="build",
                   detail=str(exc)[:2000])
        return row
    row["head"] = type(model).__name__
    row["params"] = sum(p.numel() for p in model.parameters())
    stage, t0 = "convert", time.perf_counter()
    try:
        graph = neuralgraph.convert(model, arch=arch, lpe=0)
        row["convert_s"] = time.perf_counter() - t0
        row.update(converter=graph.meta.get("converter"), nodes=graph.num_nodes, edges=graph.num_edges,
                   symmetries=len(graph.symmetries))
        stage, t1 = "verify", time.perf_counter()
        report = neuralgraph.verify(model, graph, trials=2)
        row["verify_s"] = time.perf_counter() - t1
        row["result"] = "passed" if report else "FAILED"
        if not report:
            row.update(stage="verify", detail=str(report)[:2000])
    except neuralgraph.NeuralGraphError as exc:
        row.update(result=f"refused: {_first_line(str(exc))}", stage=stage, detail=str(exc)[:2000],
                   reason=_first_line(str(_original(exc)), 400), where=_innermost_library_frame(exc))
    except Exception as exc:
        row.update(result=f"crashed: {type(exc).__name__}: {_first_line(str(exc))}", stage=stage,
                   detail=f"{type(exc).__name__}: {str(exc)[:2000]}", reason=_first_line(str(exc), 400),
                   where=_innermost_library_frame(exc))
    row["seconds"] = time.perf_counter() - t0
    return row


def run_row_in_subprocess(model_type: str, auto: str, timeout: float, arch: str | None = None) -> dict[str, Any]:
    """:func:`run_row` in a fresh interpreter, killed after ``timeout`` seconds."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's neuralgraph
    env = dict(os.environ, PYTHONPATH=path, TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, __file__, "--row", model_type, auto] + (["--arch", arch] if arch else [])
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return blank_row(model_type, auto, result=f"timeout (> {timeout:.0f} s)", seconds=time.perf_counter() - t0)
    lines = out.stdout.strip().splitlines()
    if out.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return blank_row(model_type, auto, result=f"crashed: process exited {out.returncode}: {_first_line(tail)}",
                     detail=out.stderr[-2000:], seconds=time.perf_counter() - t0)


# --- the plan and the report ------------------------------------------------------------------------


def plan(types: list[str], heads: str) -> list[tuple[str, str]]:
    """The (type, auto class) rows to run; a type whose config cannot be built gets a base row."""
    rows = []
    for t in types:
        try:
            found = head_classes(tiny_config(t), heads)
        except Exception:  # reported by the row itself
            found = [(HEADS[0], "")]
        rows += [(t, auto) for auto, _ in found]
    return rows


def outcome(result: str) -> str:
    """``passed``, ``FAILED``, ``refused``, ``crashed``, ``timeout`` or ``build failed``."""
    for key in ("passed", "FAILED", "refused", "crashed", "timeout", "build failed"):
        if result.startswith(key):
            return key
    return result


def summary(rows: list[dict], types: list[str]) -> str:
    good = {r["type"] for r in rows if r["result"] == "passed"}
    passed = sum(r["result"] == "passed" for r in rows)
    bare = sorted({r["type"] for r in rows if r["result"] == "passed" and not r.get("symmetries")})
    note = f" (passing rows without any declared symmetry, so nothing to test: {', '.join(bare)})" if bare else ""
    return (f"{len(good)} of {len(types)} types have at least one head that converts and verifies; "
            f"{passed} rows passed of {len(rows)}{note}")


def counts(rows: list[dict]) -> str:
    tally: dict[str, int] = {}
    for r in rows:
        tally[outcome(r["result"])] = tally.get(outcome(r["result"]), 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in tally.items())


def _cell(value: Any, fmt: str = "{:,}") -> str:
    return "" if value is None else fmt.format(value)


def markdown(rows: list[dict], types: list[str], command: str) -> str:
    import torch
    import transformers

    lines = [
        "# Hugging Face coverage: tiny models converted and verified",
        "",
        f"Generated by `{command}` (`benchmarks/hf_coverage.py`): torch {torch.__version__}, "
        f"transformers {transformers.__version__}, Python {platform.python_version()}. Each row is a tiny model "
        "(`AutoConfig.for_model` with the script's overrides) converted with `neuralgraph.convert(model, lpe=0)` "
        "and checked with `neuralgraph.verify(model, graph, trials=2)`; seconds are convert + verify.",
        "",
        f"**{summary(rows, types)}.** Outcomes: {counts(rows)}.",
        "",
        "| type | head | converter | params | nodes | edges | symmetries | result | seconds |",
        "|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        result = r["result"].replace("|", "\\|")
        lines.append(
            f"| {r['type']} | {r.get('head') or r['auto']} | {r.get('converter') or ''} | {_cell(r.get('params'))} "
            f"| {_cell(r.get('nodes'))} | {_cell(r.get('edges'))} | {_cell(r.get('symmetries'))} | {result} "
            f"| {_cell(r.get('seconds'), '{:.1f}')} |"
        )
    return "\n".join(lines) + "\n"


def progress(i: int, n: int, row: dict) -> None:
    print(f"[{i}/{n}] {row['type']:<12} {row.get('head') or row['auto']:<40} {row['result'][:90]} "
          f"({_cell(row.get('seconds'), '{:.1f}')} s)", file=sys.stderr, flush=True)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--heads", choices=["base", "all"], default="all", help="base model only, or every head")
    parser.add_argument("--only", default="", help="comma-separated model types (e.g. gpt2,t5)")
    parser.add_argument("--quick", action="store_true", help=f"base models of {', '.join(QUICK)} (for CI)")
    parser.add_argument("--beyond", action="store_true", help=f"base models of {len(BEYOND)} popular types beyond the "
                        "56, written to docs/results/hf_coverage_beyond.{md,json}")
    parser.add_argument("--update", action="store_true", help="rerun the --only types (all heads) and replace "
                        "their rows in the written docs/results/hf_coverage.{md,json}")
    parser.add_argument("--write", action="store_true", help="write docs/results/hf_coverage.{md,json} "
                        "even for a partial run (--only, --quick, --heads base, --arch)")
    parser.add_argument("--timeout", type=positive_float, default=120.0, help="seconds per row (default 120)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="rows run at once (default 1)")
    parser.add_argument("--arch", help="force this converter (e.g. traced) instead of the library's choice")
    parser.add_argument("--row", nargs=2, metavar=("TYPE", "AUTO"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.row:  # child process: one row as a JSON line
        print(json.dumps(run_row(*args.row, arch=args.arch)))
        return

    import transformers

    transformers.logging.set_verbosity_error()
    types = QUICK if args.quick else BEYOND if args.beyond else [t.strip() for t in args.only.split(",") if t.strip()] or TYPES
    from transformers import CONFIG_MAPPING

    unknown = [t for t in types if t not in TYPES and t not in CONFIG_MAPPING]
    if unknown:  # types beyond the 56 are fine where transformers knows them (generic overrides only)
        parser.error(f"unknown model types {unknown}; the table's types are {', '.join(TYPES)}, and any "
                     "model_type transformers knows may be named")
    heads = "base" if args.quick or args.beyond else args.heads
    todo = plan(types, heads)
    print(f"{len(todo)} rows for {len(types)} types", file=sys.stderr, flush=True)

    results: list[dict | None] = [None] * len(todo)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_row_in_subprocess, t, a, args.timeout, args.arch): i
                   for i, (t, a) in enumerate(todo)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            results[i] = future.result()
            progress(done, len(todo), results[i])
    rows = [r for r in results if r is not None]

    command = "python benchmarks/hf_coverage.py " + " ".join(sys.argv[1:])
    if args.update:  # these types' rows replace theirs in the written table; the rest stay as measured
        old = json.loads((RESULTS / "hf_coverage.json").read_text())
        fresh = {r["type"] for r in rows}
        by_type: dict[str, list[dict]] = {}
        for r in old:
            by_type.setdefault(r["type"], []).append(r)
        for r in rows:
            by_type.setdefault(r["type"], [])
        for t in fresh:
            by_type[t] = [r for r in rows if r["type"] == t]
        rows = [r for t in by_type for r in by_type[t]]
        types = list(by_type)
        command = f"python benchmarks/hf_coverage.py --jobs 2 --timeout 300`, then `{command.strip()}"
    text = markdown(rows, types, command.strip())
    print(text)
    partial = (args.quick or args.only or heads != "all" or args.arch) and not args.update
    if args.write or args.beyond or not partial:
        stem = "hf_coverage_beyond" if args.beyond else "hf_coverage"
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{stem}.md").write_text(text)
        (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {RESULTS / stem}.md and .json", file=sys.stderr)


if __name__ == "__main__":
    main()
