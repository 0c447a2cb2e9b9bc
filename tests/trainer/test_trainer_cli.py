"""`python -m trainer` in-process: run directory, reproducibility, resume, Ctrl-C, eval, bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.policy import init_params, load_policy
from tests.trainer.conftest import RUN_FILES
from trainer import cli
from trainer.cli import main
from trainer.config import TrainConfig

TINY = ["--max-episodes", "48", "--eval-episodes", "5", "--quiet"]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_train_writes_the_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["--seed", "2", "--out", str(out), *TINY]) == 0
    assert "not solved in 48 episodes" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == RUN_FILES
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert rows[0] == ["episode", "return", "avg100", "env_steps", "wall_s"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, len(rows)))
    returns = [float(r[1]) for r in rows[1:]]
    assert float(rows[-1][2]) == pytest.approx(np.mean(returns[-100:]), abs=0.01)
    assert all(float(r[4]) >= 0 for r in rows[1:])
    policy = load_policy(out / "policy.npz")
    assert policy.hidden == 32 and policy.meta["train_seed"] == 2
    assert policy.meta["episodes"] == len(returns) and policy.meta["eval_mean_return"] > 0
    assert Image.open(out / "curve.png").format == "PNG"


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["--seed", "5", "--out", str(tmp_path / name), "--reproducible", *TINY]) == 0
    for name in ("metrics.csv", "policy.npz", "config.json", "curve.png"):  # as README says
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_without_reproducible_only_clock_fields_differ(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["--seed", "5", "--out", str(tmp_path / name), *TINY]) == 0

    def columns(run: str) -> list[list[str]]:
        return [row[:4] for row in csv.reader((tmp_path / run / "metrics.csv").open())]

    assert columns("a") == columns("b")
    first, second = (
        load_policy(tmp_path / "a" / "policy.npz"),
        load_policy(tmp_path / "b" / "policy.npz"),
    )
    for key in ("W1", "W2"):
        assert np.array_equal(first.params[key], second.params[key])


def test_ctrl_c_saves_and_resume_continues(tmp_path: Path, interrupt_after) -> None:
    flags = ["--seed", "4", "--max-episodes", "120", "--eval-episodes", "0", "--quiet"]
    interrupt_after(60)
    part = tmp_path / "part"
    assert main(["--out", str(part), *flags]) == 130
    before = (part / "metrics.csv").read_text().splitlines()
    assert 60 <= len(before) - 1 < 120
    interrupted = load_policy(part / "policy.npz")
    assert interrupted.meta["episodes"] == len(before) - 1
    interrupt_after(None)

    copy = tmp_path / "copy"
    shutil.copytree(part, copy)
    assert main(["--resume", str(part), "--quiet"]) == 0
    after = (part / "metrics.csv").read_text().splitlines()
    assert after[: len(before)] == before  # the history is kept, then continued
    assert len(after) - 1 >= 120
    # resuming is deterministic too: the copy continues the same way
    assert main(["--resume", str(copy), "--quiet", "--reproducible"]) == 0
    assert main(["--resume", str(tmp_path / "copy2"), "--quiet"]) == 2  # missing: refused
    resumed = [row.split(",")[:4] for row in after]
    assert [
        row.split(",")[:4] for row in (copy / "metrics.csv").read_text().splitlines()
    ] == resumed


def test_ctrl_c_saves_the_last_update_not_the_initial_weights(
    tmp_path: Path, interrupt_after
) -> None:
    interrupt_after(40)
    out = tmp_path / "run"
    assert main(["--seed", "7", "--out", str(out), *TINY]) == 130
    saved = load_policy(out / "policy.npz").params["W1"]
    with np.load(out / "checkpoint.npz") as checkpoint:
        assert np.array_equal(saved, checkpoint["W1"].astype(np.float32))
    initial = init_params(32, np.random.default_rng(7))["W1"].astype(np.float32)
    assert not np.array_equal(saved, initial)


def test_ctrl_c_during_the_final_evaluation_still_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr("trainer.evaluate.evaluate", interrupted)
    out = tmp_path / "run"
    assert main(["--seed", "7", "--out", str(out), *TINY]) == 130
    assert "Traceback" not in capsys.readouterr().err
    assert {p.name for p in out.iterdir()} >= RUN_FILES


def test_ctrl_c_while_saving_finishes_the_save_then_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer import rundir

    save_checkpoint = rundir.save_checkpoint

    def signalled(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C in the middle of saving
        return save_checkpoint(*args, **kwargs)

    monkeypatch.setattr(rundir, "save_checkpoint", signalled)
    out = tmp_path / "run"
    assert main(["--seed", "7", "--out", str(out), *TINY]) == 130
    assert (out / "curve.png").is_file() and (out / "checkpoint.npz").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_failed_save_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer import rundir

    def full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir, "save_checkpoint", full)
    assert main(["--seed", "7", "--out", str(tmp_path / "run"), *TINY]) == 1
    assert "cannot save the run" in one_error_line(capsys)


def test_ctrl_c_during_eval_is_one_line_and_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["--seed", "1", "--out", str(out), "--max-episodes", "1", "--quiet"]) == 0
    capsys.readouterr()

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr("trainer.evaluate.evaluate", interrupted)
    assert main(["eval", str(out), "--episodes", "3"]) == 130
    assert one_error_line(capsys) == "trainer: interrupted"


def test_progress_bar_ends_with_the_final_count_and_average() -> None:
    from types import SimpleNamespace

    class Bar:  # records what tqdm would show
        n, postfix = 0, None

        def update(self, count: int) -> None:
            self.n += count

        def set_postfix(self, refresh: bool = True, **values: str) -> None:
            self.postfix = values

        def close(self) -> None:
            pass

    progress = cli._Progress(TrainConfig(), quiet=False)
    progress.bar = Bar()
    returns = [10.0] * 8
    progress.update(SimpleNamespace(returns=returns, episodes=8, env_steps=[80] * 8))
    returns += [100.0]  # the solving episode ends after the last update
    progress.close(SimpleNamespace(returns=returns, episodes=9, env_steps=[80] * 9))
    assert progress.bar.n == 9 and progress.bar.postfix == {"avg100": "20.0"}


def test_resume_can_extend_the_budget(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["--out", str(out), *TINY]) == 0
    assert main(["--resume", str(out), "--max-episodes", "80", "--quiet"]) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) - 1 >= 80


def test_eval_prints_mean_min_max_and_records_a_gif(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"  # one episode, no update: an untrained policy falls fast (short GIF)
    assert main(["--seed", "1", "--out", str(out), "--max-episodes", "1", "--quiet"]) == 0
    capsys.readouterr()
    gif = tmp_path / "episode.gif"
    assert main(["eval", str(out), "--episodes", "7", "--record", str(gif), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "mean" in printed and "min" in printed and "max" in printed and "7 episodes" in printed
    image = Image.open(gif)
    assert image.format == "GIF" and image.n_frames > 1
    # a policy file works too, and the same seed gives the same numbers
    assert main(["eval", str(out / "policy.npz"), "--episodes", "7", "--seed", "3"]) == 0
    assert (
        capsys.readouterr().out.split(":", 1)[1] == printed.splitlines()[0].split(":", 1)[1] + "\n"
    )


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--no-such-flag"], "unrecognized arguments"),
        (["--hidden", "-3"], "hidden must be an integer"),
        (["--hidden", "0"], "hidden must be an integer"),
        (["--lr", "abc"], "argument --lr: must be a number, got 'abc'"),
        (["--lr", "nan"], "lr must be a number"),
        (["--gamma", "1.5"], "gamma must be a number"),
        (["--preset", "fast"], "invalid choice"),
        (["--max-episodes", "ten"], "argument --max-episodes: must be an integer, got 'ten'"),
        (["eval"], "required"),
        (["eval", "nowhere/policy.npz"], "no such file"),
        (["eval", ".", "--episodes", "0"], "--episodes must be in 1..1000000"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path / a) if a.startswith("nowhere") else a for a in argv]
    assert main(argv + (["--out", str(tmp_path / "o")] if argv[0] != "eval" else [])) == 2
    assert fragment in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("epoch", ["abc", "1e9", str(10**20)])
def test_bad_source_date_epoch_is_refused_before_training(
    epoch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    assert main(["--out", str(tmp_path / "o"), *TINY]) == 2
    assert "SOURCE_DATE_EPOCH" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_unwritable_record_is_refused_before_evaluating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["--out", str(out), "--max-episodes", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--record", str(tmp_path / "missing" / "a.gif")]) == 2
    assert "--record" in one_error_line(capsys)
    assert main(["eval", str(out), "--record", str(tmp_path)]) == 2
    assert "is a directory" in one_error_line(capsys)


def test_record_where_the_file_system_refuses_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["--seed", "1", "--out", str(out), "--max-episodes", "1", "--quiet"]) == 0
    capsys.readouterr()

    def refused(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise PermissionError(13, "Permission denied")  # as /sys does even for root

    monkeypatch.setattr(cli.tempfile, "TemporaryFile", refused)
    gif = tmp_path / "episode.gif"
    assert main(["eval", str(out), "--episodes", "1", "--record", str(gif)]) == 2
    assert "cannot write there: Permission denied" in one_error_line(capsys)
    monkeypatch.undo()
    monkeypatch.setattr(cli, "atomic_write", refused)  # the disk fills up while rendering
    assert main(["eval", str(out), "--episodes", "1", "--record", str(gif)]) == 2
    assert "cannot write: Permission denied" in capsys.readouterr().err
    assert not gif.exists()


def test_corrupt_policy_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "policy.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    assert main(["eval", str(bad)]) == 2
    assert "policy.npz" in one_error_line(capsys)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("W1.npy", b"junk")
    bad.write_bytes(archive.getvalue())
    assert main(["eval", str(tmp_path)]) == 2
    one_error_line(capsys)


def test_runs_started_in_the_same_second_get_their_own_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "default_out", lambda: Path("runs") / "20260101-000000")
    for seed in ("1", "2"):
        assert main(["--seed", seed, "--max-episodes", "2", "--eval-episodes", "0", "--quiet"]) == 0
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["20260101-000000", "20260101-000000-2"]
    seeds = [load_policy(p / "policy.npz").meta["train_seed"] for p in sorted(runs.iterdir())]
    assert seeds == [1, 2]
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(cli, "default_out", lambda: tmp_path / "file" / "20260101-000000")
    assert main(["--max-episodes", "2", "--quiet"]) == 2


def test_existing_run_is_not_clobbered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "policy.npz").write_bytes(b"precious")
    assert main(["--out", str(out), *TINY]) == 2
    assert "not empty" in one_error_line(capsys)
    assert (out / "policy.npz").read_bytes() == b"precious"


def test_unwritable_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--out", str(blocker / "run"), *TINY]) == 2
    assert "not writable" in one_error_line(capsys)
    assert main(["--out", str(blocker), *TINY]) == 2
    assert "not a directory" in one_error_line(capsys)


def test_bad_resume_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--resume", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in one_error_line(capsys)
    out = tmp_path / "run"
    assert main(["--out", str(out), *TINY]) == 0
    assert main(["--resume", str(out), "--hidden", "8"]) == 2
    assert "--hidden cannot change" in one_error_line(capsys)
    checkpoint = (out / "checkpoint.npz").read_bytes()
    (out / "checkpoint.npz").write_bytes(b"garbage")
    policy = (out / "policy.npz").read_bytes()
    assert main(["--resume", str(out)]) == 2
    line = one_error_line(capsys)
    assert "checkpoint.npz: not a NumPy .npz archive" in line and "pickle" not in line
    assert (out / "policy.npz").read_bytes() == policy
    with np.load(io.BytesIO(checkpoint)) as archive:
        arrays = {name: archive[name] for name in archive.files if name != "cache_W2"}
    np.savez(out / "checkpoint.npz", **arrays)
    assert main(["--resume", str(out)]) == 2
    assert "missing entries ['cache_W2']" in one_error_line(capsys)
    arrays["cache_W2"] = arrays["cache_W1"][:, 0]
    arrays["info"] = np.array(json.dumps({"format": "reinforce-edge/checkpoint-1"}))
    np.savez(out / "checkpoint.npz", **arrays)
    assert main(["--resume", str(out)]) == 2
    assert "info lacks ['last_mean_return', 'rng', 'solved_at', 'updates']" in one_error_line(
        capsys
    )


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--num-envs" in text and "seed preset: 100" in text and "--resume" in text
