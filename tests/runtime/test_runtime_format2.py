"""The device runtime and format 2: it runs bernoulli/relu policies without biases or
normaliser and refuses every other one in one line: exit 2 at start, a rejection over MQTT."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import BackendError, check_runnable, make_active
from runtime.cli import main
from runtime.policy import (
    PolicySpec,
    init_params,
    make_meta,
    meta_to_json,
    parse_policy,
    policy_bytes,
    save_policy,
    signed_message,
)
from runtime.updates import UpdateRejected, UpdateRules, validate_update
from tests.ota_support import PREFIX, Device, Watcher, new_key, update_result, weights
from tests.runtime.conftest import balancing_params

CREATED = "2026-01-01T00:00:00+00:00"
GAUSSIAN = PolicySpec(hidden=8, head="gaussian", action_low=(-1.0,), action_high=(1.0,))
UNRUNNABLE = {
    "categorical": (PolicySpec(hidden=8, head="categorical", action_dim=2), {}),
    "gaussian": (GAUSSIAN, {}),
    "tanh": (PolicySpec(hidden=8, activation="tanh"), {}),
    "biases": (PolicySpec(hidden=8), {"biases": True}),
    "normaliser": (PolicySpec(hidden=8), {"normaliser": True}),
}


def format_2_bytes(spec: PolicySpec, version: int = 6, key=None, **options) -> bytes:
    params = init_params(spec.hidden, np.random.default_rng(0), spec=spec, **options)
    meta = make_meta(spec=spec, version=version, created=CREATED)
    signature = None
    if key is not None:
        signature = key.sign(signed_message(meta_to_json(meta), params, 2))
    return policy_bytes(params, meta, signature)


@pytest.mark.parametrize("case", sorted(UNRUNNABLE))
def test_make_active_refuses_what_the_fast_path_does_not_compute(case: str) -> None:
    spec, options = UNRUNNABLE[case]
    policy = parse_policy(format_2_bytes(spec, **options))
    with pytest.raises(BackendError, match="cannot run on this device runtime yet") as raised:
        make_active(policy, "numpy")
    assert f"head {spec.head}" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(BackendError, match="cannot run on this device runtime yet"):
        make_active(policy, "onnxruntime", "policy.npz")


def test_a_format_2_policy_with_format_1_maths_runs_like_format_1() -> None:
    params = balancing_params()
    spec = PolicySpec(hidden=8)
    v1 = parse_policy(policy_bytes(params, make_meta(hidden=8, version=1)))
    v2 = parse_policy(policy_bytes(params, make_meta(spec=spec, version=1, created=CREATED)))
    check_runnable(v2)
    obs = np.array([0.01, -0.2, 0.03, 0.4], np.float32)
    assert make_active(v2).probability(obs) == make_active(v1).probability(obs)


def test_the_cli_refuses_a_categorical_policy_in_one_line_exit_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "policy.npz"
    path.write_bytes(format_2_bytes(UNRUNNABLE["categorical"][0]))
    assert main(["--policy", str(path), "--episodes", "1", "--hz", "0"], environ={}) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert "head categorical" in lines[0] and "cannot run on this device runtime yet" in lines[0]
    assert captured.out == ""


def test_the_cli_still_runs_a_format_2_bernoulli_relu_policy(tmp_path: Path, capsys) -> None:
    path = tmp_path / "policy.npz"
    save_policy(path, balancing_params(), make_meta(spec=PolicySpec(hidden=8), version=3))
    assert main(["--policy", str(path), "--episodes", "1", "--hz", "0"], environ={}) == 0
    assert capsys.readouterr().out.startswith("episode 1: return 500 in 500 steps")


def test_validate_update_rejects_an_unrunnable_policy_with_the_reason() -> None:
    current = parse_policy(policy_bytes(weights(), make_meta(hidden=8, version=5)))
    data = format_2_bytes(GAUSSIAN, version=6)
    rules = UpdateRules(allow_unsigned=True)
    with pytest.raises(UpdateRejected, match="head gaussian") as raised:
        validate_update(data, rules, current=current, highest_version=5, refused=())
    assert raised.value.version == 6 and "cannot run on this device runtime yet" in str(
        raised.value
    )


def test_an_unrunnable_update_over_mqtt_is_rejected_and_nothing_applied(tmp_path, broker) -> None:
    key, pub = new_key(tmp_path)
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    device = Device(tmp_path, broker.port, key, pub)
    try:
        running = device.slot.active
        files = {p.name: p.read_bytes() for p in device.state_dir.iterdir()}
        data = format_2_bytes(UNRUNNABLE["categorical"][0], version=6, key=key)
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", data)
        status = watcher.wait_for(update_result(hashlib.sha256(data).hexdigest()))
        last = status["last_update"]
        assert last["result"] == "rejected" and "head categorical" in last["reason"], last
        assert "cannot run on this device runtime yet" in last["reason"]
        assert status["policy_version"] == 5 and device.slot.active is running
        assert {p.name: p.read_bytes() for p in device.state_dir.iterdir()} == files
    finally:
        device.stop()
        watcher.close()
