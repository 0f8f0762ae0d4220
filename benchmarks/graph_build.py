"""Graph build time, LPE time and peak memory for MLPs and convnets of 10K to 50M parameters.

Each configuration runs in a fresh subprocess so that its peak resident memory is its own.
Models are created on the ``meta`` device: building a graph needs shapes, not weights.
"Build" covers ``neuralgraph.convert`` plus materializing ``edge_index`` and ``edge_type``;
"LPE" is the 8 Laplacian eigenvectors; "peak" is the subprocess's maximum RSS, and "over base"
subtracts the RSS after importing torch and neuralgraph.

    python benchmarks/graph_build.py            # the full table (about a minute)
    python benchmarks/graph_build.py --quick    # up to 1M parameters
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CONFIGS = [
    # name, kind, width  (MLP: 784 -> w -> w -> w -> 10; convnet: 3 -> c -> c -> c 3x3 convs, pool, linear 10)
    ("mlp-10K", "mlp", 12),
    ("mlp-100K", "mlp", 110),
    ("mlp-1M", "mlp", 560),
    ("mlp-10M", "mlp", 2040),
    ("mlp-50M", "mlp", 4810),
    ("convnet-10K", "conv", 22),
    ("convnet-100K", "conv", 74),
    ("convnet-1M", "conv", 235),
    ("convnet-10M", "conv", 745),
    ("convnet-50M", "conv", 1666),
]

CHILD = r"""
import json, resource, sys, time
import torch
from torch import nn
import neuralgraph
kind, width = sys.argv[1], int(sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.device("meta"):
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                              nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    else:
        model = nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.Conv2d(width, width, 3), nn.ReLU(),
                              nn.Conv2d(width, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(width, 10))
t0 = time.perf_counter()
g = neuralgraph.convert(model, lpe=8)
g.edge_index, g.edge_type
t1 = time.perf_counter()
pos = g.pos
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(params=g.num_params, nodes=g.num_nodes, edges=g.num_edges, build=t1 - t0, lpe=t2 - t1,
                      peak_mb=peak / 1024, base_mb=base / 1024)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only configurations up to 1M parameters")
    args = parser.parse_args()
    configs = [c for c in CONFIGS if not args.quick or not c[0].endswith(("10M", "50M"))]
    header = f"{'model':<14}{'params':>12}{'nodes':>9}{'edges':>12}{'build s':>9}{'LPE s':>8}{'total s':>9}{'peak MB':>9}{'over base':>10}"
    print(header)
    print("-" * len(header))
    for name, kind, width in configs:
        out = subprocess.run([sys.executable, "-c", CHILD, kind, str(width)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name:<14} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{name:<14}{r['params']:>12,}{r['nodes']:>9,}{r['edges']:>12,}{r['build']:>9.3f}{r['lpe']:>8.3f}"
            f"{r['build'] + r['lpe']:>9.3f}{r['peak_mb']:>9.0f}{r['peak_mb'] - r['base_mb']:>10.0f}"
        )


if __name__ == "__main__":
    main()
