"""torch.distributed: NiNo jumps keep every rank's parameters bit-identical.

One ``torchrun --nproc_per_node 2`` launch (gloo, CPU) of ``ddp_worker.py`` runs every scenario;
the tests compare what each rank saved. The worker's predictor adds a rank-dependent offset, so
the ranks agree only because one rank's prediction is broadcast to all.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from nowcast.distributed import assign_parts, unwrap_model

HERE = Path(__file__).resolve().parent
RANKS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={RANKS}", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(HERE / "ddp_worker.py"), str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, cwd=HERE, env=env, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return out


def _ranks(results: Path, scenario: str) -> list[dict]:
    return [torch.load(results / f"{scenario}-rank{r}.pt", weights_only=True) for r in range(RANKS)]


@pytest.mark.parametrize("mode", ["rank0", "split"])
def test_wrapper_under_ddp_keeps_ranks_identical(results, mode):
    saved = _ranks(results, f"wrapper-{mode}")
    assert [s["jumps"] for s in saved] == [3, 3]
    assert torch.equal(saved[0]["params"], saved[1]["params"])


def test_split_prediction_matches_per_block_on_one_rank(results):
    saved = _ranks(results, "split")
    assert saved[0]["parts"] >= RANKS
    assert torch.equal(saved[0]["split"], saved[1]["split"])
    torch.testing.assert_close(saved[0]["split"], saved[0]["local"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("scenario", ["trainer-linefit", "trainer-split"])
def test_trainer_callback_under_torchrun_keeps_ranks_identical(results, scenario):
    saved = _ranks(results, scenario)
    assert [s["jumps"] for s in saved] == [3, 3]
    assert torch.isfinite(saved[0]["losses"]).all()
    assert torch.equal(saved[0]["params"], saved[1]["params"])


def test_ranks_with_different_models_each_nowcast_their_own(results):
    saved = _ranks(results, "independent")
    assert all(s["warned"] and s["jumps"] == 1 for s in saved)
    assert not torch.equal(saved[0]["params"], saved[1]["params"])


def test_fsdp_is_refused_with_the_reason(results):
    for saved in _ranks(results, "fsdp"):
        assert "sharded by FSDP" in saved["message"] and "DDP" in saved["message"]


def test_assign_parts_balances_and_covers():
    class Part:
        def __init__(self, n):
            self.num_params = n

    owner = assign_parts([Part(n) for n in (10, 50, 30, 30, 5)], 2)
    loads = [sum(n for n, o in zip((10, 50, 30, 30, 5), owner) if o == r) for r in range(2)]
    assert sorted(loads) == [60, 65]
    assert assign_parts([Part(3)], 4) == [0]
    with pytest.raises(ValueError, match="ranks"):
        assign_parts([], 0)


def test_unwrap_model_strips_data_parallel():
    inner = nn.Linear(2, 2)
    assert unwrap_model(nn.DataParallel(inner)) is inner
    assert unwrap_model(inner) is inner
