"""Time and peak memory of one NiNo nowcasting step, measured through ``nowcast.predict`` (the
path the optimizer wrapper and every user call take), next to the step's compute floor.

A step is what the optimizer wrapper does every period: scale the ``ctx`` recorded states per
tensor, run the NiNo model over the (cached) neural graph for horizon ``k``, unscale and read the
parameters back. Graphs of 2^20+ edges take the block-wise path (``nowcast.model.graph_source``):
inputs are read from the history block by block, so no edge-sized tensor is built. The graph
(``neuralgraph.convert`` with LPE) is built once per training run and timed separately. Each row
runs in a fresh subprocess.

"floor s" is the time of dense ``[rows, 128] x [128, 128]`` products with as many multiply-adds as
the model's per-edge work on every edge ("MACs/edge", counted from its config: 117,376 for the
published NiNo), timed in the same process just before the step; "x floor" is step / floor.
"RSS before MB" is the process's resident memory just before the step: the recorded states, the
graph, the NiNo model, Python and torch, and what building the model and graph left allocated.
"step peak MB" is the peak during the step alone (the peak is reset just before it); the step's
own working set is the difference.

    python benchmarks/nowcast_step.py                 # GPT-2 3.4M and 7.4M
    python benchmarks/nowcast_step.py --gpt2-124m     # adds GPT-2 124M (minutes)
    python benchmarks/nowcast_step.py --only llama-1b # Llama-3.2-1B shape, bf16 states (an hour on 2 cores)
    python benchmarks/nowcast_step.py --checkpoint DIR --lr-interval 0.12  # a regime-routed checkpoint
    python benchmarks/nowcast_step.py --device cuda  # the step on a GPU (floor timed there too)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from neuralgraph.cli_args import ArgumentParser, positive_float, positive_int

LLAMA_1B = {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True}
ROWS = {
    # name: (model family, config arguments, dtype of the recorded states)
    "gpt2-3.4M": ("gpt2", {"n_embd": 64, "n_layer": 3, "n_head": 4}, "float32"),
    "gpt2-7.4M": ("gpt2", {"n_embd": 128, "n_layer": 4, "n_head": 4}, "float32"),
    "gpt2-124M": ("gpt2", {}, "float32"),
    "llama-1b": ("llama", LLAMA_1B, "bfloat16"),
}
DEFAULT_ROWS = ["gpt2-3.4M", "gpt2-7.4M"]

CHILD = r"""
import json, sys, time
import torch, transformers
import neuralgraph, nowcast
transformers.logging.set_verbosity_error()
ckpt, family, cfg, dtype, k, lr_interval = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], int(sys.argv[5]), json.loads(sys.argv[6])
device = torch.device(sys.argv[7])
dtype = getattr(torch, dtype)
torch.manual_seed(0)
torch.set_default_dtype(dtype)  # build the model in the history's dtype (bf16 for Llama-1B)
if family == "gpt2":
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg))
else:
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
torch.set_default_dtype(torch.float32)
t0 = time.perf_counter()
graph = neuralgraph.convert(model)
graph.pos
t1 = time.perf_counter()
theta = neuralgraph.flatten_params(model).to(dtype)
del model
states = torch.empty(theta.numel(), 5, dtype=dtype)  # a fake 5-state history, built in row chunks
for i in range(0, theta.numel(), 1 << 24):
    rows = theta[i : i + (1 << 24)].float().unsqueeze(1)
    states[i : i + (1 << 24)] = rows + 1e-3 * torch.randn(rows.shape[0], 5).cumsum(1)
del theta, rows  # rows may be a view of theta: keep nothing of it
nino = nowcast.load(ckpt).to(device)  # the step runs where the NiNo model is (the history follows if it fits)
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
cfgn = nino.config
h, u, w = cfgn.hid, cfgn.num_edge_updates, graph.split_kernels(cfgn.max_feat_size).max_feat_size * cfgn.ctx
def edge_states(depth): return w * h + h * h + (depth - 1) * 2 * h * h
macs = w * 2 * h + sum(edge_states(d) + 2 * h * h for d in range(1, u)) + edge_states(u) + h * h + h
rows = 1 << (16 if device.type == "cpu" else 20)
a, m, c = (torch.randn(n, 128, device=device) for n in (rows, 128, rows))
torch.mm(a, m, out=c)
def timed():
    sync(); t = time.perf_counter(); torch.mm(a, m, out=c); sync()
    return time.perf_counter() - t
best = min(timed() for _ in range(20))
floor = best * macs * graph.num_edges / (rows * 128 * 128)
del a, m, c
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
before = rss_mb()  # the history, the graph, the NiNo model, Python and what earlier work left allocated
open("/proc/self/clear_refs", "w").write("5")  # reset the peak: the step's own from here
t2 = time.perf_counter()
new = nowcast.predict(graph, states, k, nino, lr_interval=lr_interval)
sync()
t3 = time.perf_counter()
step_peak = peak_mb()  # before the check below, whose temporaries are the benchmark's, not the step's
gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
assert neuralgraph.params.all_finite(new)
print(json.dumps(dict(params=graph.num_params, edges=graph.num_edges, graph_s=t1 - t0, step_s=t3 - t2, macs=macs,
                      floor_s=floor, step_peak_mb=step_peak, before_mb=before, gpu_mb=gpu_mb, states_mb=states.numel() * states.element_size() / 2**20)))
"""


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    default = Path(__file__).resolve().parents[2] / "shared" / "checkpoints" / "official" / "nino_no_posw.pt"
    parser.add_argument("--checkpoint", default=str(default), help="NiNo checkpoint (default: the published nino_no_posw.pt)")
    parser.add_argument("-k", type=positive_int, default=40, help="horizon (default 40)")
    parser.add_argument(
        "--lr-interval", type=positive_float, default=None,
        help="the regime a regime-routed checkpoint reads (base lr x steps between states; required for those)",
    )
    parser.add_argument("--gpt2-124m", action="store_true", help="also run GPT-2 124M (takes minutes)")
    parser.add_argument("--only", choices=sorted(ROWS), nargs="+", help="run these rows only")
    parser.add_argument("--device", default="cpu", help="where the NiNo model runs, e.g. cuda (default cpu); the history moves there if it fits in half the free memory")
    args = parser.parse_args()
    if not Path(args.checkpoint).exists():
        sys.exit(f"checkpoint not found: {args.checkpoint} (pass --checkpoint PATH)")
    import nowcast

    if getattr(nowcast.resolve(args.checkpoint), "uses_lr_interval", False) and args.lr_interval is None:
        sys.exit(f"{args.checkpoint} routes by training regime: pass --lr-interval (e.g. 0.12 for WikiText-2's)")
    names = args.only or DEFAULT_ROWS + (["gpt2-124M"] if args.gpt2_124m else [])
    header = (f"{'model':<11}{'states':>9}{'params':>15}{'edges':>15}{'graph s':>9}{'MACs/edge':>11}{'floor s':>9}"
              f"{'step s':>9}{'x floor':>9}{'states MB':>11}{'RSS before MB':>15}{'step peak MB':>14}")
    print(header)
    print("-" * len(header))
    for name in names:
        family, cfg, dtype = ROWS[name]
        out = subprocess.run([sys.executable, "-c", CHILD, args.checkpoint, family, json.dumps(cfg), dtype, str(args.k),
                              json.dumps(args.lr_interval), args.device], capture_output=True, text=True)
        if out.returncode:
            print(f"{name:<11} failed: {(out.stderr.strip().splitlines() or ['killed'])[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<11}{dtype:>9}{r['params']:>15,}{r['edges']:>15,}{r['graph_s']:>9.1f}{r['macs']:>11,}"
              f"{r['floor_s']:>9.1f}{r['step_s']:>9.1f}{r['step_s'] / r['floor_s']:>9.2f}{r['states_mb']:>11,.0f}"
              f"{r['before_mb']:>15,.0f}{r['step_peak_mb']:>14,.0f}"
              + (f"   GPU peak {r['gpu_mb']:,.0f} MB" if r["gpu_mb"] is not None else ""), flush=True)


if __name__ == "__main__":
    main()
