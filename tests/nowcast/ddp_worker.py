"""Worker of tests/nowcast/test_distributed.py, run by ``python -m torch.distributed.run --nproc_per_node 2``.

Each scenario trains or predicts on every rank and saves, per rank, what the test compares
(``<out>/<scenario>-rank<r>.pt``). The predictors add a rank-dependent offset
(:class:`RankNoisy`), so the ranks end identical only if one rank's prediction reaches all of them.

Usage: ``ddp_worker.py OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import neuralgraph as ng
import nowcast
from nowcast.distributed import predict_synced
from nowcast.parts import context_hops, layer_parts


class RankNoisy:
    """Linefit+ plus ``1e-3 * (rank + 1)``: computed on two ranks, the predictions differ."""

    name = "rank-noisy Linefit+"
    needs_graph = False

    def __init__(self) -> None:
        self.inner = nowcast.LinefitPlus()

    def predict(self, graph, states: torch.Tensor, k: int) -> torch.Tensor:
        return self.inner.predict(graph, states, k) + 1e-3 * (dist.get_rank() + 1)


def save(out: Path, scenario: str, **values) -> None:
    torch.save(values, out / f"{scenario}-rank{dist.get_rank()}.pt")


def wrapper(out: Path, mode: str) -> None:
    """nowcast.NiNo around a DDP model; each rank sees its own data."""
    from nowcast_testutils import Layered, regression_data

    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Layered((4, 8, 8, 3)))
    x, y = regression_data(n=64, seed=dist.get_rank())
    opt = nowcast.NiNo(torch.optim.Adam(model.parameters(), lr=1e-2), model, RankNoisy(), period=10, max_train_steps=30, distributed=mode)
    for step in range(30):
        opt.zero_grad()
        if opt.need_grads:
            i = (step * 8) % 64
            nn.functional.mse_loss(model(x[i : i + 8]), y[i : i + 8]).backward()
        opt.step()
    save(out, f"wrapper-{mode}", params=ng.flatten_params(model.module).detach(), jumps=opt.jumps)


def independent(out: Path) -> None:
    """Ranks training different models (no DDP): each nowcasts its own, with a warning."""
    import warnings

    from nowcast_testutils import Layered, regression_data

    torch.manual_seed(dist.get_rank())
    model = Layered((4, 8, 3))
    x, y = regression_data(n=8)
    opt = nowcast.NiNo(torch.optim.Adam(model.parameters(), lr=1e-2), model, "linefit+", period=10, max_train_steps=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(10):
            opt.zero_grad()
            if opt.need_grads:
                nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    warned = any("not data-parallel" in str(w.message) for w in caught)
    save(out, "independent", params=ng.flatten_params(model).detach(), jumps=opt.jumps, warned=warned)


def split_prediction(out: Path) -> None:
    """predict_synced(split=True) with the shipped NiNo checkpoint against per-block prediction on one rank."""
    from hf_testutils import tiny_gpt2

    model = tiny_gpt2()
    graph = ng.convert(model)
    predictor = nowcast.resolve("nino")
    parts = layer_parts(graph, context_hops=context_hops(predictor))
    gen = torch.Generator().manual_seed(0)
    theta = ng.flatten_params(model).detach()
    states = theta[:, None] + 0.01 * torch.arange(5.0)[None, :] * torch.randn(theta.shape[0], 1, generator=gen)
    split = predict_synced(graph, states, 5, predictor, num_params=graph.num_params, parts=parts, lr_interval=0.02, split=True)
    local = nowcast.predict(graph, states, 5, predictor, per_block=True, parts=parts, lr_interval=0.02)
    save(out, "split", split=split, local=local, parts=len(parts))


def trainer(out: Path, name: str, predictor, mode: str) -> None:
    """NiNoCallback in a Trainer run under torchrun (DDP over gloo)."""
    from hf_testutils import flat, run_trainer, tiny_gpt2, training_args

    from nowcast.hf import NiNoCallback

    callback = NiNoCallback(predictor, period=10, distributed=mode)
    args = training_args(out / name, ddp_backend="gloo")
    result = run_trainer(tiny_gpt2(), args, [callback])
    losses = [entry["loss"] for entry in result.state.log_history if "loss" in entry]
    save(out, name, params=flat(result.model), jumps=callback.jumps, losses=torch.tensor(losses))


def fsdp_refused(out: Path) -> None:
    """A model sharded with FSDP2 (fully_shard) is refused by the wrapper, with the reason."""
    from torch.distributed.fsdp import fully_shard

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    fully_shard(model)
    try:
        nowcast.NiNo(torch.optim.Adam(model.parameters()), model, "linefit+", period=10, max_train_steps=30)
        message = ""
    except NotImplementedError as exc:
        message = str(exc)
    save(out, "fsdp", message=message)


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        wrapper(out, "rank0")
        wrapper(out, "split")
        split_prediction(out)
        independent(out)
        trainer(out, "trainer-linefit", "linefit+", "rank0")
        trainer(out, "trainer-split", RankNoisy(), "split")
        fsdp_refused(out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
