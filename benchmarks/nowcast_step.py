"""Time and peak memory of one NiNo nowcasting step on GPT-2-style models (CPU).

A step is what the optimizer wrapper does every period: scale the ``ctx`` recorded states per
tensor, build edge features on the (cached) graph, run the NiNo model for horizon ``k``, unscale
and read the parameters back. The graph itself (``neuralgraph.convert`` with LPE) is built once
per training run and timed separately. Each row runs in a fresh subprocess (peak RSS is its own).

    python benchmarks/nowcast_step.py --checkpoint ../shared/checkpoints/official/nino_no_posw.pt
    python benchmarks/nowcast_step.py --checkpoint ... --gpt2-124m     # adds GPT-2 124M (minutes)
    python benchmarks/nowcast_step.py --checkpoint DIR --lr-interval 0.12  # a regime-conditioned checkpoint
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from neuralgraph.cli_args import ArgumentParser, positive_float, positive_int

ROWS = [
    ("gpt2 64w 3L 4H", {"n_embd": 64, "n_layer": 3, "n_head": 4}),
    ("gpt2 128w 4L 4H", {"n_embd": 128, "n_layer": 4, "n_head": 4}),
]
BIG = ("gpt2 124M", {})

CHILD = r"""
import json, resource, sys, time
import torch, transformers
import neuralgraph, nowcast
from nowcast.scaling import scale_states, unscale
transformers.logging.set_verbosity_error()
ckpt, cfg, k = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
lr_interval = json.loads(sys.argv[4])
torch.manual_seed(0)
model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg))
t0 = time.perf_counter()
graph = neuralgraph.convert(model)
graph.edge_index, graph.pos
t1 = time.perf_counter()
theta = neuralgraph.flatten_params(model)
states = theta.unsqueeze(1) + 1e-3 * torch.randn(theta.numel(), 5).cumsum(1)  # a fake 5-state history
del model
nino = nowcast.load(ckpt)
t2 = time.perf_counter()
with torch.no_grad():
    scaled, scales = scale_states(states, graph.params)
    data = graph.to_pyg(scaled)
    if lr_interval is not None:
        data.lr_interval = lr_interval
    out = nino(data, k)
    new = unscale(graph.to_params(out), scales)
t3 = time.perf_counter()
assert torch.isfinite(new).all()
print(json.dumps(dict(params=graph.num_params, edges=graph.num_edges, graph_s=t1 - t0, step_s=t3 - t2,
                      streamed=nino._should_stream(graph.num_edges, None, True),
                      peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    default = Path(__file__).resolve().parents[2] / "shared" / "checkpoints" / "official" / "nino_no_posw.pt"
    parser.add_argument("--checkpoint", default=str(default), help="NiNo checkpoint (default: the published nino_no_posw.pt)")
    parser.add_argument("-k", type=positive_int, default=40, help="horizon (default 40)")
    parser.add_argument(
        "--lr-interval", type=positive_float, default=None,
        help="the regime a regime-conditioned checkpoint reads (base lr x steps between states; required for those)",
    )
    parser.add_argument("--gpt2-124m", action="store_true", help="also run GPT-2 124M (takes minutes)")
    parser.add_argument("--only-124m", action="store_true", help="run GPT-2 124M alone")
    args = parser.parse_args()
    if not Path(args.checkpoint).exists():
        sys.exit(f"checkpoint not found: {args.checkpoint} (pass --checkpoint PATH)")
    import nowcast

    if getattr(nowcast.resolve(args.checkpoint), "uses_lr_interval", False) and args.lr_interval is None:
        sys.exit(f"{args.checkpoint} routes by training regime: pass --lr-interval (e.g. 0.12 for WikiText-2's)")
    rows = [BIG] if args.only_124m else ROWS + ([BIG] if args.gpt2_124m else [])
    header = f"{'model':<18}{'params':>13}{'edges':>14}{'graph s':>9}{'step s':>9}{'streamed':>10}{'peak MB':>9}"
    print(header)
    print("-" * len(header))
    for name, cfg in rows:
        out = subprocess.run([sys.executable, "-c", CHILD, args.checkpoint, json.dumps(cfg), str(args.k), json.dumps(args.lr_interval)],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{name:<18} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<18}{r['params']:>13,}{r['edges']:>14,}{r['graph_s']:>9.1f}{r['step_s']:>9.1f}"
              f"{str(r['streamed']):>10}{r['peak_mb']:>9.0f}")


if __name__ == "__main__":
    main()
