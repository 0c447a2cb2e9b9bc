"""Format 1 byte for byte: the files every existing device holds must be written as they were.

The sha256 values were computed before format 2 existed (commit 9f96986); any change to how a
format-1 policy is encoded, signed or saved breaks them.
"""

from __future__ import annotations

import hashlib

import numpy as np

from runtime.policy import (
    init_params,
    make_meta,
    meta_to_json,
    policy_bytes,
    save_policy,
    signed_bytes,
)

SIGNATURE = bytes(range(64))  # any 64 bytes: the encoding, not the signature, is pinned
UNSIGNED_SHA256 = "01e3de07539e7c0945784ac001bd8359de683c0fa6d53d8e446221d6d2dbce02"
SIGNED_SHA256 = "f1f52afdee123ac2e586c06dc95aa2ba03c103c679944fc50fda7dafbbfb39d8"
SIGNED_BYTES_SHA256 = "aa342cee5882d4ff7f500a5a877627ec95f4fd65da211f8231715167dc5acccf"


def fixed_policy() -> tuple[dict[str, np.ndarray], dict]:
    params = init_params(8, np.random.default_rng(20261202))
    meta = make_meta(
        hidden=8,
        version=7,
        train_seed=3,
        episodes=12,
        eval_mean_return=500.0,
        created="2026-01-01T00:00:00+00:00",
    )
    return params, meta


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_policy_bytes_of_a_format_1_policy_are_pinned() -> None:
    params, meta = fixed_policy()
    data = policy_bytes(params, meta)
    assert len(data) == 1646 and sha256(data) == UNSIGNED_SHA256
    assert sha256(policy_bytes(params, meta, SIGNATURE)) == SIGNED_SHA256


def test_signed_bytes_of_a_format_1_policy_are_pinned() -> None:
    params, meta = fixed_policy()
    assert meta_to_json(meta) == (
        '{"created":"2026-01-01T00:00:00+00:00","env_id":"CartPole-v1","episodes":12,'
        '"eval_mean_return":500.0,"format":"reinforce-edge/policy","format_version":1,'
        '"hidden":8,"obs_dim":4,"train_seed":3,"version":7}'
    )
    message = signed_bytes(meta_to_json(meta), params["W1"], params["W2"])
    assert sha256(message) == SIGNED_BYTES_SHA256


def test_save_policy_of_a_format_1_policy_writes_the_pinned_bytes(tmp_path) -> None:
    params, meta = fixed_policy()
    save_policy(tmp_path / "policy.npz", params, meta, SIGNATURE)
    assert sha256((tmp_path / "policy.npz").read_bytes()) == SIGNED_SHA256
