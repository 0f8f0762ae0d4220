"""nowcast.hf.NiNoCallback in transformers.Trainer runs of a tiny GPT-2 (CPU, one process).

The torchrun tests are in test_distributed.py.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from hf_testutils import LoraGPT2, flat, run_trainer, tiny_gpt2, training_args
from nowcast_testutils import Recording, small_nino
from transformers import TrainerCallback

from nowcast import horizon_schedule
from nowcast.errors import CheckpointError
from nowcast.hf import STATE_FILENAME, NiNoCallback
from nowcast.hf.state_file import read_state

STEPS, PERIOD = 30, 10


class Snapshots(TrainerCallback):
    """The model's flat parameters at every on_step_end (before or after NiNoCallback's, by list order)."""

    def __init__(self) -> None:
        self.at: dict[int, torch.Tensor] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.at[state.global_step] = flat(model).clone()


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> torch.Tensor:
    """Parameters after a plain Trainer run (no callback)."""
    return flat(run_trainer(tiny_gpt2(), training_args(tmp_path_factory.mktemp("plain"))).model)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> tuple[Path, torch.Tensor, NiNoCallback, list[dict]]:
    """An uninterrupted callback run saving a checkpoint every 4 steps."""
    out = tmp_path_factory.mktemp("saved")
    callback = NiNoCallback("linefit+", period=PERIOD)
    trainer = run_trainer(tiny_gpt2(), training_args(out, save_strategy="steps", save_steps=4), [callback])
    return out, flat(trainer.model), callback, trainer.state.log_history


def test_jumps_change_the_run_and_are_logged(saved_run, plain):
    _, params, callback, history = saved_run
    assert callback.jumps == STEPS // PERIOD and callback.discarded == 0
    assert (params - plain).abs().max() > 1e-4  # the jumps moved the parameters
    jumps = [entry for entry in history if "nino_jump" in entry]
    assert [entry["step"] for entry in jumps] == [10, 20, 30]
    assert [entry["nino_k"] for entry in jumps] == horizon_schedule(STEPS, PERIOD)
    for entry in jumps:
        assert entry["nino_seconds"] >= 0 and "loss" in entry  # merged into the Trainer's own log line
        assert torch.isfinite(torch.tensor([entry["nino_loss_before"], entry["nino_loss_after"], entry["loss"]])).all()
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in history if "loss" in entry)


def test_states_and_jumps_fall_on_the_right_optimizer_steps(tmp_path):
    """With gradient accumulation: states after updates 2, 4, ..., 10; the jump writes the prediction after update 10."""
    before, after, recording = Snapshots(), Snapshots(), Recording()
    callback = NiNoCallback(recording, period=PERIOD)
    args = training_args(tmp_path, steps=20, gradient_accumulation_steps=2)
    run_trainer(tiny_gpt2(), args, [before, callback, after])
    assert [k for k, _ in recording.calls] == horizon_schedule(20, PERIOD)
    for jump, (_, states) in enumerate(recording.calls):
        steps = [PERIOD * jump + 2 * (i + 1) for i in range(5)]
        assert torch.equal(states, torch.stack([before.at[s] for s in steps], dim=1))
        assert torch.equal(after.at[PERIOD * (jump + 1)], recording.outputs[jump])


@pytest.mark.parametrize("step", [16, 20])
def test_resume_ends_where_the_uninterrupted_run_ends(saved_run, step, tmp_path):
    out, params, _, _ = saved_run
    checkpoint = out / f"checkpoint-{step}"
    states, info = read_state(checkpoint / STATE_FILENAME)
    assert info["filled"] == (step % PERIOD) // 2 and info["global_step"] == step
    assert (states is None) == (info["filled"] == 0)
    callback = NiNoCallback("linefit+", period=PERIOD)
    resumed = run_trainer(tiny_gpt2(seed=1), training_args(out, save_strategy="no"), [callback], resume=str(checkpoint))
    assert callback.jumps == STEPS // PERIOD
    assert (flat(resumed.model) - params).abs().max().item() <= 1e-6


def test_plain_trainer_resume_is_exact(tmp_path):
    """The baseline the callback relies on: the Trainer alone resumes this run exactly."""
    full = run_trainer(tiny_gpt2(), training_args(tmp_path, save_strategy="steps", save_steps=16))
    resumed = run_trainer(tiny_gpt2(), training_args(tmp_path), resume=str(tmp_path / "checkpoint-16"))
    assert torch.equal(flat(full.model), flat(resumed.model))


def test_resume_without_the_state_file_warns_and_waits_a_period(saved_run, tmp_path):
    out, params, _, _ = saved_run
    copy = tmp_path / "checkpoint-16"
    subprocess.run(["cp", "-r", str(out / "checkpoint-16"), str(copy)], check=True)
    (copy / STATE_FILENAME).unlink()
    callback = NiNoCallback("linefit+", period=PERIOD)
    with pytest.warns(RuntimeWarning, match="no matching"):
        resumed = run_trainer(tiny_gpt2(), training_args(tmp_path), [callback], resume=str(copy))
    assert callback.jumps == 1  # step 20 had no full period of states; step 30 jumped
    assert (flat(resumed.model) - params).abs().max() > 1e-4


def test_bf16_autocast_with_gradient_accumulation(tmp_path):
    callback = NiNoCallback("linefit+", period=PERIOD)
    trainer = run_trainer(tiny_gpt2(), training_args(tmp_path, bf16=True, gradient_accumulation_steps=2), [callback])
    assert callback.jumps == 3
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(torch.isfinite(torch.tensor([e["nino_loss_before"], e["nino_loss_after"]])).all() for e in callback.jump_log)


def test_frozen_base_keeps_its_weights_and_adapters_are_nowcast(tmp_path):
    model = LoraGPT2()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    recording = Recording()
    callback = NiNoCallback(recording, period=PERIOD)
    run_trainer(model, training_args(tmp_path), [callback])
    assert callback.jumps == 3 and callback.graph is None
    assert recording.calls[0][1].shape == (trainable, 5)  # element-wise: only the adapters are recorded
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name


def test_graph_predictor_on_a_subgraph_of_the_trainable_parameters(tmp_path):
    model = tiny_gpt2()
    model.transformer.wte.requires_grad_(False)
    model.transformer.wpe.requires_grad_(False)
    frozen = model.transformer.wte.weight.detach().clone()
    callback = NiNoCallback(small_nino(), period=PERIOD)
    run_trainer(model, training_args(tmp_path, steps=10), [callback])
    assert callback.jumps == 1
    names = callback.selection.names
    assert "transformer.wte.weight" not in names and "transformer.h.0.attn.c_attn.weight" in names
    assert callback.graph.num_params == sum(p.numel() for p in callback.selection.params)
    assert torch.equal(model.transformer.wte.weight, frozen)


def test_graph_predictor_on_an_unconvertible_model_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="linefit"):
        run_trainer(LoraGPT2(), training_args(tmp_path, steps=2), [NiNoCallback(small_nino(), period=PERIOD)])


def test_nonfinite_prediction_is_skipped_with_a_warning(tmp_path):
    before, after = Snapshots(), Snapshots()
    callback = NiNoCallback(Recording(nan=True), period=PERIOD)
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        trainer = run_trainer(tiny_gpt2(), training_args(tmp_path, steps=20), [before, callback, after])
    assert callback.jumps == 0 and callback.discarded == 2
    assert torch.equal(before.at[10], after.at[10])  # the parameters were left as they were
    assert [e.get("nino_discarded") for e in trainer.state.log_history if "nino_discarded" in e] == [1.0, 2.0]


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="multiple of ctx"):
        NiNoCallback("linefit+", period=12, ctx=5)
    with pytest.raises(ValueError, match="period must be a positive integer"):
        NiNoCallback("linefit+", period=0)
    with pytest.raises(ValueError, match="distributed must be one of"):
        NiNoCallback("linefit+", distributed="all")
    with pytest.raises(ValueError, match="unknown method"):
        NiNoCallback("not-a-method")
    callback = NiNoCallback("linefit+")
    for option, value in (("deepspeed", "ds.json"), ("fsdp", "full_shard")):
        args = SimpleNamespace(**{"deepspeed": None, "fsdp": None, option: value})
        with pytest.raises(NotImplementedError, match=option):
            callback.on_train_begin(args, SimpleNamespace(), SimpleNamespace(), model=tiny_gpt2())


def test_damaged_state_file_is_refused(tmp_path):
    path = tmp_path / STATE_FILENAME
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_state(path)


def test_import_nowcast_works_without_transformers():
    code = (
        "import sys\n"
        "sys.modules['transformers'] = None\n"
        "sys.modules['accelerate'] = None\n"
        "import nowcast\n"
        "try:\n"
        "    import nowcast.hf\n"
        "except ImportError as exc:\n"
        "    assert '.[hf]' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('nowcast.hf imported without transformers')\n"
    )
    with warnings.catch_warnings():
        done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_per_block_shows_a_progress_line_and_matches_the_whole_model(saved_run, tmp_path, capsys):
    _, params, _, _ = saved_run
    callback = NiNoCallback("linefit+", period=PERIOD, per_block=True, progress_delay=0)
    trainer = run_trainer(tiny_gpt2(), training_args(tmp_path, disable_tqdm=False), [callback])
    assert "NiNo jump (k=40)" in capsys.readouterr().err
    assert torch.equal(flat(trainer.model), params)  # Linefit+ per block = Linefit+ on the whole model


def test_a_loaded_predictor_follows_the_trainers_device(tmp_path, monkeypatch):
    import nowcast.hf.callback

    small_nino().save(tmp_path / "mine")
    seen = []
    monkeypatch.setattr(nowcast.hf.callback, "follow_device", lambda nowcaster, spec, device: seen.append((spec, device)))
    model = tiny_gpt2()
    run_trainer(model, training_args(tmp_path / "out", steps=2), [NiNoCallback(str(tmp_path / "mine"), period=5)])
    assert seen == [(str(tmp_path / "mine"), next(model.parameters()).device)]
