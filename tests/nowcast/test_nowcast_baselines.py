"""Baselines: Linefit, Linefit+, WNN, and the Nowcaster protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nowcast_testutils import small_nino

import neuralgraph as ng
from neuralgraph.examples import mlp
from nowcast import Linefit, LinefitPlus, NiNoPredictor, Nowcaster, resolve, WNN, WNNPlus


def linear_trajectories(rows: int, ctx: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, 1, generator=gen, dtype=torch.float64)
    b = torch.randn(rows, 1, generator=gen, dtype=torch.float64) * 1e-2
    t = torch.arange(ctx, dtype=torch.float64)
    return (a + b * t).to(dtype), a, b


def _uneven(ctx: int) -> list[float]:
    return [0.0 if t == 2 else 0.5 + t for t in range(ctx)]


@pytest.mark.parametrize("predictor", [Linefit(), LinefitPlus(), Linefit(weights=_uneven)], ids=["plain", "plus", "custom"])
@pytest.mark.parametrize("ctx", [2, 5, 8])
def test_linefit_is_exact_on_linear_trajectories(predictor: Linefit, ctx: int) -> None:
    states, a, b = linear_trajectories(1000, ctx, torch.float64)
    for k in (1, 3, 40):
        expected = (a + b * (ctx - 1 + k)).squeeze(1)
        torch.testing.assert_close(predictor.predict(None, states, k), expected, rtol=1e-12, atol=1e-14)
    states32, a, b = linear_trajectories(1000, ctx, torch.float32)
    out = predictor.predict(None, states32, 5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), (a + b * (ctx + 4)).squeeze(1), rtol=1e-6, atol=1e-6)


def test_linefit_plus_weights() -> None:
    assert LinefitPlus().weights(5).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert LinefitPlus().weights(3).tolist() == [1.0, 2.0, 3.0]
    assert Linefit().weights(5).tolist() == [1.0] * 5
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(50, 5, generator=gen, dtype=torch.float64)
    w = LinefitPlus().weights(5)
    t = torch.arange(5, dtype=torch.float64)
    design = torch.stack([torch.ones(5, dtype=torch.float64), t], dim=1)
    root = w.sqrt().unsqueeze(1)
    # weighted least squares: minimize sum_t w_t (x_t - a - b t)^2
    coef = torch.linalg.lstsq(root * design, (root * states.T)).solution  # [2, 50]
    for k in (1, 7):
        expected = coef[0] + coef[1] * (4 + k)
        torch.testing.assert_close(LinefitPlus().predict(None, states, k), expected, rtol=1e-10, atol=1e-12)
        c = LinefitPlus().coefficients(5, k)
        assert abs(c.sum().item() - 1) < 1e-12
    # after a kink the weighted fit follows the recent slope more closely
    kink = torch.tensor([[0.0, 0.0, 0.0, 1.0, 2.0]], dtype=torch.float64)
    plain, plus = Linefit().predict(None, kink, 1).item(), LinefitPlus().predict(None, kink, 1).item()
    assert plain < plus < 3.0


def test_linefit_keeps_constant_parameters_and_checks_inputs() -> None:
    states = torch.full((10, 5), 0.1234567)
    assert torch.equal(Linefit().predict(None, states, 17), states[:, -1])
    with pytest.raises(ValueError, match="two states"):
        Linefit().predict(None, states[:, :1], 1)
    with pytest.raises(ValueError, match="weights"):
        Linefit(weights=[1, 2]).predict(None, states, 1)
    with pytest.raises(ValueError, match="positive weight"):
        Linefit(weights=[0, 0, 0, 0, 1]).predict(None, states, 1)
    with pytest.raises(ValueError, match="positive integer"):
        Linefit().predict(None, states, 0)


def test_wnn(tmp_path: Path) -> None:
    torch.manual_seed(0)
    wnn = WNN(ctx=5, hid=8, layers=3, seq_len=10, chunk=7)
    states = torch.randn(30, 5).cumsum(1)
    states[3] = 2.5  # a parameter that did not move stays exactly where it is
    out = wnn.predict(None, states, 4)
    assert out.shape == (30,) and torch.isfinite(out).all() and out[3] == 2.5
    # min-max scaling: an affine change of a parameter's history changes its prediction the same way
    torch.testing.assert_close(wnn.predict(None, 3 * states + 1, 4), 3 * out + 1, rtol=1e-5, atol=1e-5)
    unchunked = WNN(ctx=5, hid=8, layers=3, seq_len=10, chunk=0)
    unchunked.load_state_dict(wnn.state_dict())
    torch.testing.assert_close(unchunked.predict(None, states, 4), out)
    path = wnn.save(tmp_path / "wnn.safetensors")
    again = WNN.load(path)
    assert again.config == wnn.config
    # equal up to the last bit of float32 (on this machine's current wheels the reloaded network's
    # matmuls round differently in the last place; the weights themselves are equal)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), wnn.state_dict().values()))
    torch.testing.assert_close(again.predict(None, states, 4), out, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="ctx=5"):
        wnn.predict(None, states[:, :4], 1)
    with pytest.raises(ValueError, match="1..10"):
        wnn.predict(None, states, 11)
    with pytest.raises(FileNotFoundError):
        WNN.load(tmp_path / "missing.safetensors")


def test_nowcaster_protocol_and_conversion(tmp_path: Path) -> None:
    for predictor in (Linefit(), LinefitPlus(), WNN(), NiNoPredictor(small_nino()), WNNPlus(small_nino(gnn=False))):
        assert isinstance(predictor, Nowcaster)
        assert resolve(predictor) is predictor
    assert [Linefit.needs_graph, WNN.needs_graph, NiNoPredictor.needs_graph] == [False, False, True]
    assert resolve("linefit").name == "Linefit"
    assert resolve("Linefit+").name == "Linefit+"
    assert resolve(small_nino()).name == "NiNo"
    assert resolve(small_nino(gnn=False)).name == "WNN+"
    model = small_nino()
    model.save(tmp_path / "nino")
    loaded = resolve(tmp_path / "nino")
    assert isinstance(loaded, NiNoPredictor) and loaded.ctx == 5 and loaded.seq_len == 40
    with pytest.raises(ValueError, match="WNNPlus"):
        NiNoPredictor(small_nino(gnn=False))
    with pytest.raises(ValueError, match="NiNoPredictor"):
        WNNPlus(small_nino())
    with pytest.raises(TypeError):
        resolve(42)
    with pytest.raises(FileNotFoundError):
        resolve(tmp_path / "nothing.pt")


def test_model_nowcasters_match_predict() -> None:
    graph = ng.convert(mlp())
    states = torch.randn(graph.num_params, 5).cumsum(1)
    model = small_nino()
    from nowcast import predict

    assert torch.equal(NiNoPredictor(model).predict(graph, states, 3), predict(graph, states, 3, model))
    assert NiNoPredictor(model).context_hops == 2 and WNNPlus(small_nino(gnn=False)).context_hops == 0
