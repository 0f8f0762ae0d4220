"""Converting large Hugging Face models on the ``meta`` device: time, LPE time and peak memory.

No weights are allocated and the edge index is never materialized; each model runs in its own
subprocess so that peak RSS is its own.

    python benchmarks/transformer_graphs.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CONFIGS = {
    "gpt2-124M": ("GPT2Config", "GPT2LMHeadModel", {}),
    "gpt2-medium-355M": ("GPT2Config", "GPT2LMHeadModel", {"n_embd": 1024, "n_layer": 24, "n_head": 16}),
    "llama-3.2-1B-shape": ("LlamaConfig", "LlamaForCausalLM", {
        "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True}),
}

CHILD = r"""
import json, resource, sys, time
import torch, transformers
import neuralgraph
transformers.logging.set_verbosity_error()
cfg_cls, model_cls, kwargs = json.loads(sys.argv[1])
t0 = time.perf_counter()
with torch.device("meta"):
    model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**kwargs))
t1 = time.perf_counter()
g = neuralgraph.convert(model)
t2 = time.perf_counter()
pos = g.pos
t3 = time.perf_counter()
block = g.layers(lpe=0)[0]
t4 = time.perf_counter()
print(json.dumps(dict(params=g.num_params, nodes=g.num_nodes, edges=g.num_edges, groups=len(g.groups),
                      convert=t2 - t1, lpe=t3 - t2, block=t4 - t3, block_edges=block.num_edges,
                      peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def main() -> None:
    header = f"{'model':<20}{'params':>15}{'nodes':>10}{'edges':>15}{'convert s':>11}{'LPE s':>8}{'layers() s':>11}{'peak MB':>9}"
    print(header)
    print("-" * len(header))
    for name, spec in CONFIGS.items():
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name:<20} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<20}{r['params']:>15,}{r['nodes']:>10,}{r['edges']:>15,}{r['convert']:>11.2f}{r['lpe']:>8.2f}"
              f"{r['block']:>11.2f}{r['peak_mb']:>9.0f}")


if __name__ == "__main__":
    main()
