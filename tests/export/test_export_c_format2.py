"""policy.h of format-2 policies, emlearn-style: random policies of random sizes for every head,
activation, with and without biases and normaliser, compiled with gcc and a harness written
here (not export's), run, and compared with runtime.policy's distribution and greedy_action."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from export import build, parity
from export.c_header import c_float, render_header
from export.console import Failure
from runtime.policy import (
    Policy,
    PolicySpec,
    distribution,
    forward_pass,
    greedy_action,
    init_params,
    make_meta,
    normalise,
    parse_policy,
    policy_bytes,
    save_policy,
)
from tests.export.conftest import CREATED, needs_gcc

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
PICKY = ["-Wdouble-promotion", "-Wconversion", "-Wshadow", "-Wundef"]
HEADS = ("bernoulli", "categorical", "gaussian")
CASES = list(itertools.product(HEADS, ("relu", "tanh"), (False, True), (False, True)))
FLOAT_SUMS_BOUND = 1e-5  # relative to 1 + the sum of |terms|: float rounding of the sums


def random_policy(head: str, activation: str, biases: bool, normaliser: bool, seed: int) -> Policy:
    """Random sizes (obs_dim 1-16, hidden 1-64, n 2-6, k 1-4) and non-trivial values."""
    rng = np.random.default_rng(seed)
    obs_dim, hidden = int(rng.integers(1, 17)), int(rng.integers(1, 65))
    action_dim = {"bernoulli": 1, "categorical": int(rng.integers(2, 7))}.get(
        head, int(rng.integers(1, 5))
    )
    bounds = {}
    if head == "gaussian":
        low = rng.uniform(-2.0, -0.1, action_dim)
        bounds = {"action_low": list(low), "action_high": list(low + rng.uniform(0.2, 3.0))}
    spec = PolicySpec(hidden, obs_dim, activation, head, action_dim, **bounds)
    params = init_params(hidden, rng, spec=spec, biases=biases, normaliser=normaliser)
    for name in ("b1", "b2", "obs_mean"):
        if name in params:
            params[name] = rng.standard_normal(params[name].shape)
    if normaliser:
        params["obs_std"] = np.exp(rng.standard_normal(obs_dim))
    if head == "gaussian":
        params["log_std"] = rng.standard_normal(action_dim) * 0.5
    return parse_policy(policy_bytes(params, make_meta(spec=spec, version=3, created=CREATED)))


def sample_observations(obs_dim: int, seed: int) -> np.ndarray:
    """Typical, wide (clipped by a normaliser) and zero observations."""
    rng = np.random.default_rng(seed + 1000)
    rows = [rng.standard_normal((150, obs_dim)) * 3.0, rng.standard_normal((48, obs_dim)) * 100.0]
    return np.concatenate([*rows, np.zeros((2, obs_dim))]).astype(np.float32)


def harness(policy: Policy, obs: np.ndarray) -> str:
    """A C program printing, per observation, the distribution then the action, one per line."""
    spec = policy.spec
    table = ",\n".join("{" + ", ".join(c_float(v) for v in row) + "}" for row in obs)
    if spec.head == "bernoulli":
        body = 'printf("%.9g\\n%d\\n", (double)policy_prob(observations[r]), policy_action(observations[r]));'
    elif spec.head == "categorical":
        body = """policy_probs(observations[r], values);
        for (a = 0; a < POLICY_ACTION_DIM; ++a) printf("%.9g\\n", (double)values[a]);
        printf("%d\\n", policy_action(observations[r]));"""
    else:
        body = """policy_mean(observations[r], values);
        for (a = 0; a < POLICY_ACTION_DIM; ++a) printf("%.9g\\n", (double)values[a]);
        policy_action(observations[r], values);
        for (a = 0; a < POLICY_ACTION_DIM; ++a) printf("%.9g\\n", (double)values[a]);"""
    return f"""#include <stdio.h>
#include "policy.h"
static const float observations[{len(obs)}][POLICY_OBS_DIM] = {{
{table}
}};
int main(void)
{{
    float values[POLICY_ACTION_DIM];
    int r, a;
    (void)values;
    (void)a;
    for (r = 0; r < {len(obs)}; ++r) {{
        {body}
    }}
    return 0;
}}
"""


def run_in_c(policy: Policy, obs: np.ndarray, work: Path, defines: list[str]) -> np.ndarray:
    """The harness's numbers, one row per observation."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "policy.h").write_text(render_header(policy, "test"))
    (work / "main.c").write_text(harness(policy, obs))
    compile_command = ["gcc", *STRICT, *PICKY, "-O2", *defines, "main.c", "-o", "main", "-lm"]
    compiled = subprocess.run(compile_command, cwd=work, capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    ran = subprocess.run([str(work / "main")], capture_output=True, text=True, check=True)
    return np.array([float(line) for line in ran.stdout.split()]).reshape(len(obs), -1)


def rounding_bound(policy: Policy, obs: np.ndarray) -> np.ndarray:
    """FLOAT_SUMS_BOUND x (1 + |W2| (|W1| |x| + |b1|) + |b2|), the largest over the outputs."""
    p = {name: np.abs(np.float64(array)) for name, array in policy.params.items()}
    x = np.abs(normalise({k: np.float64(v) for k, v in policy.params.items()}, np.float64(obs)))
    hidden = x @ p["W1"].T + p.get("b1", 0.0)
    w2 = p["W2"].reshape(policy.spec.action_dim, -1)
    return FLOAT_SUMS_BOUND * (1.0 + np.max(hidden @ w2.T + p.get("b2", 0.0), axis=1))


def check_against_runtime(policy: Policy, obs: np.ndarray, printed: np.ndarray) -> None:
    spec = policy.spec
    params = {name: np.float64(array) for name, array in policy.params.items()}
    obs64 = np.float64(obs)
    bound = rounding_bound(policy, obs)
    truth = distribution(params, obs64, spec).reshape(len(obs), -1)
    width = truth.shape[1]
    assert np.all(np.abs(printed[:, :width] - truth) <= bound[:, None])
    expected = greedy_action(params, obs64, spec)
    if spec.head == "gaussian":
        assert np.all(np.abs(printed[:, width:] - expected) <= bound[:, None])
        action = printed[:, width:].astype(np.float32)  # %.9g reads back as the float
        assert np.all(action >= np.float32(spec.action_low))
        assert np.all(action <= np.float32(spec.action_high))
        return
    output = forward_pass(params, obs64, spec)[1].reshape(len(obs), -1)
    if spec.head == "bernoulli":
        margin = np.abs(output[:, 0])
    else:
        ordered = np.sort(output, axis=1)
        margin = ordered[:, -1] - ordered[:, -2]
    clear = margin > 2 * bound  # a decision rounding cannot flip
    assert np.mean(clear) > 0.9
    np.testing.assert_array_equal(printed[clear, width].astype(int), expected[clear])


@needs_gcc
@pytest.mark.parametrize(("head", "activation", "biases", "normaliser"), CASES)
def test_random_policies_compute_what_the_runtime_computes(
    head: str, activation: str, biases: bool, normaliser: bool, tmp_path: Path
) -> None:
    seed = CASES.index((head, activation, biases, normaliser))
    policy = random_policy(head, activation, biases, normaliser, seed)
    obs = sample_observations(policy.spec.obs_dim, seed)
    check_against_runtime(policy, obs, run_in_c(policy, obs, tmp_path, []))


@needs_gcc
@pytest.mark.parametrize("head", HEADS)
def test_double_sums_agree_too(head: str, tmp_path: Path) -> None:
    policy = random_policy(head, "tanh", True, True, seed=40)
    obs = sample_observations(policy.spec.obs_dim, 40)
    printed = run_in_c(policy, obs, tmp_path, ["-DPOLICY_ACCUMULATOR=double"])
    check_against_runtime(policy, obs, printed)


@needs_gcc
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
@pytest.mark.parametrize("head", HEADS)
def test_the_header_compiles_as_cpp(head: str, tmp_path: Path) -> None:
    policy = random_policy(head, "tanh", True, True, seed=41)
    (tmp_path / "policy.h").write_text(render_header(policy, "test"))
    (tmp_path / "use.cpp").write_text('#include "policy.h"\nint main() { return 0; }\n')
    command = ["g++", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "use.cpp"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_header_names_its_api_and_includes_math_only_where_needed() -> None:
    gaussian = render_header(random_policy("gaussian", "relu", False, False, seed=5), "test")
    assert "#include <math.h>" not in gaussian and "expf(" not in gaussian
    assert (
        "void policy_action(const float obs[POLICY_OBS_DIM], float action[POLICY_ACTION_DIM])"
        in gaussian
    )
    assert (
        "void policy_mean(const float obs[POLICY_OBS_DIM], float mean[POLICY_ACTION_DIM])"
        in gaussian
    )
    assert "static const float policy_std[POLICY_ACTION_DIM]" in gaussian
    categorical = render_header(random_policy("categorical", "relu", True, True, seed=6), "test")
    assert "int policy_action(const float obs[POLICY_OBS_DIM])" in categorical
    assert (
        "void policy_probs(const float obs[POLICY_OBS_DIM], float probs[POLICY_ACTION_DIM])"
        in categorical
    )
    assert "#define POLICY_ACCUMULATOR float" in categorical
    bernoulli = render_header(random_policy("bernoulli", "tanh", False, True, seed=7), "test")
    assert "float policy_prob(const float obs[POLICY_OBS_DIM])" in bernoulli
    assert "tanhf" in bernoulli and "policy_b1" not in bernoulli
    for header in (gaussian, categorical, bernoulli):
        for name in ("POLICY_OBS_DIM", "POLICY_HIDDEN", "POLICY_ACTION_DIM", "POLICY_SHA256"):
            assert f"#define {name} " in header


def format_2_run(directory: Path, policy: Policy) -> Path:
    directory.mkdir(parents=True)
    save_policy(directory / "policy.npz", policy.params, policy.meta)
    return directory


@needs_gcc
@pytest.mark.parametrize("head", HEADS)
def test_export_c_writes_a_checked_format_2_header(head: str, tmp_path: Path, capsys) -> None:
    run = format_2_run(tmp_path / "run", random_policy(head, "relu", True, True, seed=8))
    assert build.main([str(run), "--c", "--version", "12"]) == 0
    header = (run / "dist" / "policy.h").read_text(encoding="ascii")
    assert '#define POLICY_VERSION "12"' in header
    checked = json.loads((run / "dist" / "manifest.json").read_text())["parity"]
    assert checked["c_accumulator"] == "float" and checked["c_action_mismatches"] == 0
    assert 0 <= checked["c_max_scaled_error"] <= checked["c_tolerance"] < 1e-4
    assert checked["observations"] > 10_000
    assert "C (float sums)" in capsys.readouterr().out
    again = format_2_run(tmp_path / "again", random_policy(head, "relu", True, True, seed=8))
    assert build.main([str(again), "--c", "--version", "12"]) == 0
    assert (again / "dist" / "policy.h").read_bytes() == header.encode("ascii")


@needs_gcc
def test_a_header_that_computes_something_else_fails_the_export(
    tmp_path: Path, monkeypatch
) -> None:
    run = format_2_run(tmp_path / "run", random_policy("categorical", "relu", True, True, 9))
    real = build.render_header

    def ties_to_the_last(policy, version, source_sha256=None):  # argmax with >= instead of >
        return real(policy, version, source_sha256).replace(
            "if (logits[a] > logits[best])", "if (logits[a] >= logits[best] - 1.0f)"
        )

    monkeypatch.setattr(build, "render_header", ties_to_the_last)
    with pytest.raises(Failure, match="C header picks a different action on [0-9]+"):
        build.main([str(run), "--c"])
    assert not (run / "dist" / "policy.h").exists()


def test_parity_observations_have_the_policys_obs_dim() -> None:
    for obs_dim in (1, 4, 9, 16):
        obs = parity.parity_observations(obs_dim=obs_dim)
        assert obs.dtype == np.float32 and obs.shape[1] == obs_dim and len(obs) > 10_000
        np.testing.assert_array_equal(obs, parity.parity_observations(obs_dim=obs_dim))
    assert len(parity.parity_observations()) == 10_194  # format 1's set, as ever


def test_without_gcc_a_format_2_header_is_written_and_the_check_skipped(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(parity, "gcc_path", lambda: None)
    run = format_2_run(tmp_path / "run", random_policy("gaussian", "tanh", True, True, seed=10))
    assert build.main([str(run), "--c"]) == 0
    manifest = json.loads((run / "dist" / "manifest.json").read_text())["parity"]
    assert manifest["c_skipped"] == "gcc not found" and manifest["c_accumulator"] == "float"
    assert manifest["c_max_scaled_error"] is None
    assert (run / "dist" / "policy.h").is_file()
