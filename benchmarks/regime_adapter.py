"""Cost of the regime adapter at prediction time (CPU, one thread by default).

Times ``nowcast.predict`` for one horizon with the plain checkpoint and with the same network
carrying a regime adapter, above its ceiling (the adapter is skipped: the plain network runs)
and below it (every weight is read as ``θ + gate · Δθ`` for the call), on three graphs:

    python benchmarks/regime_adapter.py                       # checkpoints/nino-cpu + random offsets
    python benchmarks/regime_adapter.py --adapter DIR         # a trained adapter (nowcast build-checkpoint --recipe nino-cpu-adapter)

The offsets' values do not change the cost, so by default the adapter is ``checkpoints/nino-cpu``
with random offsets (ceiling 0.2).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import neuralgraph as ng
import nowcast
from neuralgraph.cli_args import ArgumentParser, existing_path, positive_int, thread_count
from neuralgraph.examples import FMConvNet
from nowcast import NiNoConfig, NiNoModel

ROOT = Path(__file__).resolve().parents[1]


def _graphs() -> list[tuple[str, ng.NeuralGraph]]:
    import transformers

    transformers.logging.set_verbosity_error()
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=64, n_layer=3, n_head=4, vocab_size=512, n_positions=64))
    return [
        ("FM/16 convnet", ng.convert(FMConvNet((16, 32, 32)))),
        ("FM/32 convnet", ng.convert(FMConvNet((32, 64, 64)))),
        ("GPT-2 3 layers, width 64", ng.convert(gpt)),
    ]


def _adapter_from(base: NiNoModel, ceiling: float) -> NiNoModel:
    cfg = NiNoConfig.from_dict({**base.config.to_dict(), "lr_interval_input": True, "lr_interval_ceiling": ceiling, "regime_adapter": True})
    model = NiNoModel(cfg)
    model.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():
        for p in model.regime_delta.values():
            p.normal_(0.0, 0.01)
    return model.eval()


def _time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--checkpoint", type=existing_path, default=str(ROOT / "checkpoints" / "nino-cpu"), help="the plain checkpoint")
    parser.add_argument("--adapter", type=existing_path, default=None, help="a trained regime-adapter checkpoint (default: the plain one + random offsets)")
    parser.add_argument("--repeat", type=positive_int, default=5, help="predictions timed per graph (default 5)")
    parser.add_argument("--threads", type=thread_count, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = nowcast.load(args.checkpoint)
    adapter = nowcast.load(args.adapter) if args.adapter else _adapter_from(base, 0.2)
    ceiling = adapter.config.lr_interval_ceiling
    if not adapter.config.regime_adapter or ceiling is None:
        raise SystemExit(f"{args.adapter} is not a regime-adapter checkpoint (config.regime_adapter is off)")
    print(f"median of {args.repeat} predictions, k = 40, {args.threads} thread(s); adapter ceiling {ceiling:g}")
    print(f"{'graph':<26} {'params':>8} {'edges':>8} {'plain ms':>9} {'above ceiling ms':>17} {'below ceiling ms':>17}")
    for name, graph in _graphs():
        gen = torch.Generator().manual_seed(0)
        states = torch.randn(graph.num_params, 1, generator=gen) * 0.1 + 0.01 * torch.randn(graph.num_params, 5, generator=gen).cumsum(1)
        graph.edge_index, graph.pos  # build the cached structures outside the timings
        with torch.no_grad():
            plain = _time(lambda: nowcast.predict(graph, states, 40, base), args.repeat)
            above = _time(lambda: nowcast.predict(graph, states, 40, adapter, lr_interval=ceiling * 6), args.repeat)
            below = _time(lambda: nowcast.predict(graph, states, 40, adapter, lr_interval=ceiling / 5), args.repeat)
        print(f"{name:<26} {graph.num_params:>8,} {graph.num_edges:>8,} {plain * 1e3:>9.1f} {above * 1e3:>17.1f} {below * 1e3:>17.1f}")


if __name__ == "__main__":
    main()
