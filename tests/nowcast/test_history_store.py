"""The recorded-state history kept on disk (memory-mapped) instead of in memory."""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import pytest
import torch

from nowcast.history_store import allocate_history, history_place


def test_history_place() -> None:
    cpu = torch.device("cpu")
    assert history_place(None, cpu) == cpu
    assert history_place("cpu", cpu) == cpu
    assert isinstance(history_place("disk", cpu), Path)
    assert history_place("runs/states.bin", cpu) == Path("runs/states.bin")
    with pytest.raises(ValueError, match="state_device must be a torch device, 'disk'"):
        history_place("floppy", cpu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_named_file_holds_the_history(tmp_path: Path, dtype) -> None:
    path = tmp_path / "sub" / "h.bin"
    history = allocate_history(1000, 5, dtype, history_place(path, torch.device("cpu")))
    assert history.shape == (1000, 5) and history.dtype == dtype
    values = torch.randn(1000, 5).to(dtype)
    for t in range(5):
        history[:, t] = values[:, t]  # recorded column by column, as the wrapper does
    assert path.stat().st_size == 1000 * 5 * history.element_size()
    del history
    gc.collect()
    again = torch.from_file(str(path), shared=False, size=5000, dtype=dtype).view(1000, 5)
    assert torch.equal(again, values)  # the values are in the file, row-major [P, ctx]
    assert path.exists()  # a named file is the caller's


def test_an_anonymous_file_is_removed_with_the_history(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    history = allocate_history(10, 2, torch.float32, history_place("disk", torch.device("cpu")))
    history.fill_(1.0)
    (made,) = tmp_path.glob("nino-history-*.bin")
    view = history[:, :1]  # views keep the mapping alive, not the file name
    del history
    gc.collect()
    assert not made.exists()
    assert float(view.sum()) == 10.0


def test_the_wrapper_records_to_disk_and_jumps_as_in_memory(tmp_path: Path) -> None:
    import torch.nn.functional as F

    import nowcast
    from neuralgraph.examples import mlp

    results = []
    for place in (None, tmp_path / "states.bin"):
        torch.manual_seed(0)
        model = mlp((4, 8, 3))
        opt = nowcast.NiNo(torch.optim.Adam(model.parameters(), 1e-2), model, "linefit+", period=10, ctx=5,
                           max_train_steps=30, state_device=place)
        x, y = torch.randn(32, 4), torch.randint(3, (32,))
        for _ in range(30):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        assert opt.jumps == 3
        results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert (tmp_path / "states.bin").stat().st_size == results[0].numel() * 5 * 4
    assert torch.equal(results[0], results[1])


def test_the_trainer_callback_accepts_a_disk_history(tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    from nowcast.hf.history import SlotHistory

    params = [torch.randn(3, 4), torch.randn(5)]
    history = SlotHistory(["a", "b"], params, 2, tmp_path / "h.bin")
    assert history.device == torch.device("cpu")
    for slot in range(2):
        with torch.no_grad():
            params[0].add_(1.0)
        history.record(slot, step=slot)
    assert history.full
    on_disk = torch.from_file(str(tmp_path / "h.bin"), shared=False, size=17 * 2).view(17, 2)
    assert torch.equal(on_disk, history.states()) and torch.equal(on_disk[:12, 1], params[0].reshape(-1))
