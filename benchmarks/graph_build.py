"""Graph build time, LPE time and peak memory: MLPs and convnets of 10K to 50M parameters, and
Hugging Face transformers up to a Llama-3.1-8B-shaped model, by the hand-written converters and by
the traced converter (``arch="traced"``: the graph read off the forward on the meta device).

Each configuration runs in a fresh subprocess so that its peak resident memory is its own.
Models are created on the ``meta`` device: building a graph needs shapes, not weights.
"build" is the second ``neuralgraph.convert`` of the model in the process ("cold" the first, with
one-time costs: lazily imported torch and transformers code, first calls of torch kernels), plus, where the table says so, materializing ``edge_index``
and ``edge_type``; "LPE" is the 8 Laplacian eigenvectors; "peak" is the subprocess's maximum RSS
(it includes about 230 MB for Python, torch and neuralgraph themselves). Rows marked "traced" are
followed by their build time as a multiple of the hand-written converter's on the same model, in
the same run. The Llama-3.1-8B rows skip the LPE (8B edges; see the 1B row for its cost).

    python benchmarks/graph_build.py            # everything (a few minutes)
    python benchmarks/graph_build.py --quick    # up to 1M parameters
    python benchmarks/graph_build.py --only gpt2  # GPT-2 rows: hand-written against traced
    python benchmarks/graph_build.py --verify   # real-size convert + verify (GPT-2, BERT-base, ViT-B/16)

``--verify`` builds each model with real (random) weights at its published size, converts it with
the library's default converter and runs ``neuralgraph.verify`` (``trials=8``; these graphs have
over 5M edges, so verify samples: all symmetries together, 7 single symmetries and 8 ways of
breaking one). "peak" is again the subprocess's maximum RSS, model and Python included.
"dense feat MB" is what ``edge_features`` would allocate for one float32 state (every edge as wide as
the widest kernel: computed, not built), "packed MB" what ``edge_features(..., packed=True)`` did
allocate (each block at its own width; its round trip is checked), "NiNo edges" the edges after
``split_kernels(9)``, the graph a NiNo model reading 9 slots per edge receives.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from neuralgraph.cli_args import ArgumentParser, positive_int

LLAMA_8B = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
            "rope_theta": 500000.0, "tie_word_embeddings": False}
LLAMA_1B = {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True}

CONFIGS = [
    # name, kind, argument, materialize the edge index? (an optional fifth field: the converter, and the LPE size)
    # MLP: 784 -> w -> w -> w -> 10; convnet: 3 -> c -> c -> c 3x3 convs, pool, linear 10
    ("mlp-10K", "mlp", 12, True),
    ("mlp-100K", "mlp", 110, True),
    ("mlp-1M", "mlp", 560, True),
    ("mlp-10M", "mlp", 2040, True),
    ("mlp-50M", "mlp", 4810, True),
    ("convnet-10K", "conv", 22, True),
    ("convnet-100K", "conv", 74, True),
    ("convnet-1M", "conv", 235, True),
    ("convnet-10M", "conv", 745, True),
    ("convnet-50M", "conv", 1666, True),
    ("gpt2-124M", "hf", ["GPT2Config", "GPT2LMHeadModel", {}], True),
    ("gpt2-124M", "hf", ["GPT2Config", "GPT2LMHeadModel", {}], False),
    ("gpt2-124M", "hf", ["GPT2Config", "GPT2LMHeadModel", {}], False, ["traced", 8]),
    ("llama-1B-shape", "hf", ["LlamaConfig", "LlamaForCausalLM", LLAMA_1B], False),
    ("llama-1B-shape", "hf", ["LlamaConfig", "LlamaForCausalLM", LLAMA_1B], False, ["traced", 8]),
    ("llama-8B-shape", "hf", ["LlamaConfig", "LlamaForCausalLM", LLAMA_8B], False, [None, 0]),
    ("llama-8B-shape", "hf", ["LlamaConfig", "LlamaForCausalLM", LLAMA_8B], False, ["traced", 0]),
]

CHILD = r"""
import json, resource, sys, time
import torch
from torch import nn
import neuralgraph
kind, arg, materialize, arch, lpe = json.loads(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.device("meta"):
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(784, arg), nn.ReLU(), nn.Linear(arg, arg), nn.ReLU(),
                              nn.Linear(arg, arg), nn.ReLU(), nn.Linear(arg, 10))
    elif kind == "conv":
        model = nn.Sequential(nn.Conv2d(3, arg, 3), nn.ReLU(), nn.Conv2d(arg, arg, 3), nn.ReLU(),
                              nn.Conv2d(arg, arg, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(arg, 10))
    else:
        import transformers
        transformers.logging.set_verbosity_error()
        cfg_cls, model_cls, kwargs = arg
        model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**kwargs))
cold = time.perf_counter()
g = neuralgraph.convert(model, arch=arch, lpe=lpe)
if materialize:
    g.edge_index, g.edge_type
cold = time.perf_counter() - cold
del g
t0 = time.perf_counter()
g = neuralgraph.convert(model, arch=arch, lpe=lpe)
if materialize:
    g.edge_index, g.edge_type
t1 = time.perf_counter()
pos = g.pos if lpe else None
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(params=g.num_params, nodes=g.num_nodes, edges=g.num_edges, cold=cold, build=t1 - t0, lpe=t2 - t1,
                      peak_mb=peak / 1024)))
"""


VERIFY_CONFIGS = [
    # name, config class, model class, config arguments (the published base sizes)
    ("gpt2-124M", "GPT2Config", "GPT2LMHeadModel", {}),
    ("bert-base", "BertConfig", "BertForMaskedLM", {}),
    ("vit-b16-224", "ViTConfig", "ViTForImageClassification", {"num_labels": 1000}),
]

VERIFY_CHILD = r"""
import json, logging, resource, sys, time
import torch
import transformers
import neuralgraph
transformers.logging.set_verbosity_error()
logging.disable(logging.WARNING)
cfg_cls, model_cls, kwargs, trials = json.loads(sys.argv[1])
torch.manual_seed(0)
model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**kwargs)).eval()
t0 = time.perf_counter()
g = neuralgraph.convert(model, lpe=0)
t1 = time.perf_counter()
report = neuralgraph.verify(model, g, trials=trials)
t2 = time.perf_counter()
theta = neuralgraph.flatten_params(model)
packed = g.edge_features(theta, packed=True)  # one state, each block at its own width
exact = torch.equal(g.to_params(packed), theta)
split = g.split_kernels(9)  # what a NiNo model reading 9 slots gets
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(params=g.num_params, edges=g.num_edges, width=g.max_feat_size, converter=g.meta.get("converter"),
                      convert=t1 - t0, verify=t2 - t1, passed=bool(report), good=report.good_trials,
                      bad=report.bad_trials, inert=report.inert_trials, peak_mb=peak / 1024,
                      packed_mb=packed.nbytes / 2**20, dense_mb=g.num_edges * g.max_feat_size * 4 / 2**20,
                      packed_exact=exact, split_edges=split.num_edges, split_width=split.max_feat_size)))
"""


def verify_table(only: str, trials: int) -> None:
    """Real-size convert + verify, one subprocess per model."""
    header = (f"{'model':<14}{'converter':>11}{'params':>14}{'edges':>14}{'width':>6}{'convert s':>10}{'verify s':>9}"
              f"{'checks':>14}{'result':>8}{'peak MB':>9}{'dense feat MB':>14}{'packed MB':>10}{'NiNo edges':>14}")
    print(header)
    print("-" * len(header))
    for name, cfg_cls, model_cls, kwargs in VERIFY_CONFIGS:
        if only not in name:
            continue
        out = subprocess.run([sys.executable, "-c", VERIFY_CHILD, json.dumps([cfg_cls, model_cls, kwargs, trials])],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{name:<14} failed: {(out.stderr.strip().splitlines() or ['killed'])[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        checks = f"{r['good']}g/{r['bad']}b/{r['inert']}i"
        print(f"{name:<14}{r['converter'] or '':>11}{r['params']:>14,}{r['edges']:>14,}{r['width']:>6}{r['convert']:>10.2f}"
              f"{r['verify']:>9.1f}{checks:>14}{'passed' if r['passed'] else 'FAILED':>8}{r['peak_mb']:>9.0f}"
              f"{r['dense_mb']:>14,.0f}{r['packed_mb']:>10,.0f}{'' if r['packed_exact'] else ' (round trip FAILED)'}"
              f"{r['split_edges']:>14,}")


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="only configurations up to 1M parameters")
    parser.add_argument("--only", default="", help="only models whose name contains this (e.g. gpt2, llama)")
    parser.add_argument("--verify", action="store_true", help="real-size convert + verify instead (GPT-2, BERT, ViT)")
    parser.add_argument("--trials", type=positive_int, default=8, help="verify's trials= for --verify (default 8)")
    args = parser.parse_args()
    if args.verify:
        verify_table(args.only, args.trials)
        return
    configs = [c for c in CONFIGS if (not args.quick or c[0].endswith(("10K", "100K", "1M"))) and args.only in c[0]]
    header = (f"{'model':<16}{'converter':>10}{'edge index':>11}{'params':>15}{'nodes':>10}{'edges':>14}{'cold s':>8}{'build s':>9}"
              f"{'LPE s':>8}{'total s':>9}{'peak MB':>9}")
    print(header)
    print("-" * len(header))
    hand_build: dict[str, float] = {}
    hand_cold: dict[str, float] = {}
    for name, kind, arg, materialize, *extra in configs:
        arch, lpe = extra[0] if extra else (None, 8)
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([kind, arg, materialize, arch, lpe])],
                             capture_output=True, text=True)
        label = arch or "default"
        if out.returncode:
            print(f"{name:<16}{label:>10} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{name:<16}{label:>10}{'built' if materialize else 'lazy':>11}{r['params']:>15,}{r['nodes']:>10,}"
            f"{r['edges']:>14,}{r['cold']:>8.2f}{r['build']:>9.2f}{r['lpe']:>8.2f}{r['build'] + r['lpe']:>9.2f}{r['peak_mb']:>9.0f}"
        )
        if arch is None and not materialize:
            hand_build[name], hand_cold[name] = r["build"], r["cold"]
        elif arch == "traced" and name in hand_build:
            print(f"{'':<16}{'':>10}  traced / hand-written build: {r['build'] / hand_build[name]:.1f}x "
                  f"(cold: {r['cold'] / hand_cold[name]:.1f}x)")

if __name__ == "__main__":
    main()
