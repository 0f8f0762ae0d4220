"""How equivariant is the published NiNo model? ``predict(P·θ)`` against ``P·predict(θ)`` per family.

For every model family of ``neuralgraph.testing`` this draws small models, trains each for a few
Adam steps to get a short trajectory of states ``[P, 5]``, and compares the official NiNo
checkpoint's prediction for the permuted trajectory with the permuted prediction, for good
permutations (the graph's declared symmetries). Three ways to give NiNo the Laplacian positional
encodings (LPE) of the nodes are measured:

* ``graph`` — what ``nowcast.predict`` does: the encodings of the graph as it is, the same for
  ``θ`` and ``P·θ``. Neurons a permutation exchanges are alike in the graph's structure, so they
  share repeated eigenvalues, and the basis chosen inside such an eigenspace gives them different
  encodings: after the permutation a neuron carries another neuron's encoding. Not equivariant.
* ``moved`` — the encodings permuted with the nodes (``pos[π⁻¹]``): an exact relabelling of the
  whole input. Equivariant up to float32 round-off.
* ``none`` — all encodings zero: equivariant up to float32 round-off.

It also reports the published WNN+ (``nino_mlp.pt``, a per-edge MLP: no positions). Deviations
are ``max|predict(P·θ) − P·predict(θ)|`` relative to the largest predicted *change*
``max|predict(θ) − θ_last|``. Run::

    python docs/scripts/nino_equivariance.py [--seeds 3] [--families mlp,gpt2]

The checkpoints are read from ``--checkpoints`` (default ``$NEURALGRAPH_SHARED/checkpoints/official``,
else ``../shared/checkpoints/official`` beside the repository).
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
from pathlib import Path

import torch

import neuralgraph as ng
import nowcast
from neuralgraph.testing import build_example, families, family, good_permutations, node_permutation

CONTEXT = 5  # states NiNo reads
HORIZON = 5  # how far ahead it predicts (k)
POSITIONS = ("graph", "moved", "none")


def official_dir() -> Path:
    """Where the published checkpoints are looked for."""
    shared = os.environ.get("NEURALGRAPH_SHARED")
    root = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared"
    return root / "checkpoints" / "official"


def _first_float(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, dict):
        out = tuple(out.values())
    return next(_first_float(o) for o in out if isinstance(o, (torch.Tensor, tuple, list, dict)) or hasattr(o, "to_tuple"))


def trajectory(model: torch.nn.Module, inputs, steps: int = CONTEXT, lr: float = 1e-2) -> torch.Tensor:
    """``[P, steps]`` flat parameters after each of ``steps`` Adam steps on the mean square of the
    model's first output (a stand-in loss: any trajectory works for an equivariance test)."""
    work = copy.deepcopy(model).train(False)
    opt = torch.optim.Adam(work.parameters(), lr=lr)
    states = []
    for _ in range(steps):
        opt.zero_grad()
        out = work(**inputs) if isinstance(inputs, dict) else work(*inputs)
        _first_float(out).float().pow(2).mean().backward()
        opt.step()
        states.append(ng.flatten_params(work).detach())
    return torch.stack(states, dim=1)


def deviations(graph: ng.NeuralGraph, states: torch.Tensor, predictor, perm, *, use_pos: bool = True) -> dict[str, float]:
    """Relative deviation ``max|f(P·θ) − P·f(θ)| / max|f(θ) − θ_last|`` for each way of handling
    the positional encodings (:data:`POSITIONS`; only ``"graph"`` when ``use_pos`` is False)."""
    moved_states = ng.permute_params(graph, states, perm)
    pos = graph.pos
    pi = node_permutation(graph, perm)
    ways = {"graph": (pos, pos)}
    if use_pos and pos is not None:
        moved_pos = torch.empty_like(pos)
        moved_pos[pi] = pos  # node i's encoding travels with it to pi[i]
        ways["moved"] = (pos, moved_pos)
        ways["none"] = (torch.zeros_like(pos), torch.zeros_like(pos))
    out = {}
    for name, (before_pos, after_pos) in ways.items():
        extra = {"pos": before_pos} if use_pos else {}
        before = nowcast.predict(graph, states, HORIZON, predictor, **extra)
        extra = {"pos": after_pos} if use_pos else {}
        after = nowcast.predict(graph, moved_states, HORIZON, predictor, **extra)
        scale = float((before - states[:, -1]).abs().max())
        out[name] = float((after - ng.permute_params(graph, before, perm)).abs().max()) / scale
    return out


def measure(name: str, seeds: int, nino, wnn, trials: int = 3) -> dict[str, float]:
    """Worst relative deviation of each column over ``seeds`` models and ``trials`` permutations each."""
    worst = {**{p: 0.0 for p in POSITIONS}, "wnn+": 0.0}
    count = 0
    fam = family(name)
    for seed in range(seeds):
        try:
            example = build_example(name, random.Random(seed), seed)
            graph = ng.convert(example.model, arch=fam.converter.name, lpe=8)
        except ng.NeuralGraphError:
            continue
        states = trajectory(example.model, example.inputs)
        for perm in good_permutations(graph, trials, seed=seed):
            for key, value in deviations(graph, states, nino, perm).items():
                worst[key] = max(worst[key], value)
            if wnn is not None:
                worst["wnn+"] = max(worst["wnn+"], deviations(graph, states, wnn, perm, use_pos=False)["graph"])
            count += 1
    worst["permutations"] = count
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=official_dir(), help="folder of the published checkpoints")
    parser.add_argument("--families", default=",".join(families()), help="comma-separated family names")
    parser.add_argument("--seeds", type=int, default=3, help="models drawn per family")
    args = parser.parse_args(argv)
    nino_path = args.checkpoints / "nino_no_posw.pt"
    if not nino_path.is_file():
        print(f"no NiNo checkpoint at {nino_path}: pass --checkpoints FOLDER (see docs/nino.md)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    torch.set_num_threads(1)
    nino = nowcast.load(nino_path)
    wnn_path = args.checkpoints / "nino_mlp.pt"
    wnn = nowcast.load(wnn_path) if wnn_path.is_file() else None
    print("| family | permutations | NiNo, LPE of the graph | NiNo, LPE moved with the nodes | NiNo, no LPE | WNN+ |")
    print("|---|---|---|---|---|---|")
    for name in args.families.split(","):
        w = measure(name, args.seeds, nino, wnn)
        print(f"| {name} | {w['permutations']} | {w['graph']:.1e} | {w['moved']:.1e} | {w['none']:.1e} | "
              f"{w['wnn+']:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
