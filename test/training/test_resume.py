"""Kill a run and resume it: the loss sequence and the final weights equal an uninterrupted
run's, bit for bit (CPU, same number of processes). Feature dropping and LoRA dropout stay on, so
the saved random states matter."""
import json
import os
import signal

import pytest
import torch
from training_helpers import CONFIGS, cli_train, last_trainable, losses, overrides

from spatialgeo_core.training import checkpointing as ckpt
from spatialgeo_core.training.cli import EXIT_PAUSED
from spatialgeo_core.training.config import load_config
from spatialgeo_core.training.engine import train

EXTRA = ("optim.epochs=2", "run.save_every=4")          # 12 steps


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_dir, tiny_data):
    out = tmp_path_factory.mktemp("reference") / "run"
    assert cli_train("tiny_stage2.yaml", overrides(tiny_dir, tiny_data, out, "train.json",
                                                   *EXTRA)) == 0
    return out


def _same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_stopped_and_resumed_run_equals_the_uninterrupted_one(reference, tmp_path, tiny_dir,
                                                              tiny_data):
    out = tmp_path / "run"
    sets = overrides(tiny_dir, tiny_data, out, "train.json", *EXTRA)
    assert cli_train("tiny_stage2.yaml", sets + ["run.max_steps_this_run=5"]) == EXIT_PAUSED
    assert json.loads((out / "status.json").read_text())["status"] == "paused"
    assert losses(out) == losses(reference)[:5]
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [4, 5]
    assert cli_train("tiny_stage2.yaml", sets) == 0
    assert losses(out) == losses(reference)                # exact, not approximately
    _same_weights(last_trainable(out), last_trainable(reference))
    report = json.loads((out / "skipped.json").read_text())
    assert report["skipped"] == 4                          # counted across the interruption


def test_a_stop_signal_checkpoints_and_the_resume_is_exact(reference, tmp_path, tiny_dir,
                                                           tiny_data):
    out = tmp_path / "run"
    cfg = load_config(CONFIGS / "tiny_stage2.yaml",
                      overrides(tiny_dir, tiny_data, out, "train.json", *EXTRA))

    def on_step(step, row):
        if step == 6:
            os.kill(os.getpid(), signal.SIGUSR1)           # SLURM's warning before the time limit

    res = train(cfg, on_step=on_step)
    assert res.status == "paused" and res.step == 7        # the signal lands during step 7
    assert res.checkpoint == ckpt.checkpoint_dir(out, 7)
    # resume from an older checkpoint than the newest: metrics after it are rewritten
    cfg.run.resume = str(ckpt.checkpoint_dir(out, 4))
    res = train(cfg)
    assert res.status == "finished" and res.step == 12
    assert losses(out) == losses(reference)
    _same_weights(last_trainable(out), last_trainable(reference))


def test_a_failed_checkpoint_write_never_replaces_the_previous_one(tmp_path, monkeypatch):
    def write(step):
        return ckpt.write_checkpoint(ckpt.checkpoint_dir(tmp_path, step), {"w": torch.ones(2)},
                                     {"state": {}, "param_groups": []}, [{}], {"step": step},
                                     "seed: 1\n")

    write(1)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        write(2)
    monkeypatch.undo()
    d = tmp_path / ckpt.CHECKPOINTS
    assert sorted(p.name for p in d.iterdir()) == ["step-00000001"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000001"
    # a write killed by SIGKILL leaves a hidden temporary directory: ignored, then cleaned up
    (d / ".step-00000003.tmp-abc").mkdir()
    (d / ".step-00000003.tmp-abc" / ckpt.STATE).write_text("{}")
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000001"
    ckpt.clean_stale(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == ["step-00000001"]
    write(1)                                              # rewriting a step replaces it whole
    assert ckpt.read_state(ckpt.checkpoint_dir(tmp_path, 1)) == {"step": 1}
