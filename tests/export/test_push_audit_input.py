"""Audit of issue 5: `export push/status` inputs no other test gives: one line, exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.push import push_main, status_main
from runtime.policy import make_meta
from tests.ota_support import _entries, npy, raw_npz


@pytest.mark.parametrize(
    "url", ["mqtt://[::1", "mqtt://[zz::1]:1883", "mqtts://[::1:1883", "mqtt://[]:1883"]
)
def test_a_broken_ipv6_url_is_one_line_naming_the_url(url, capsys):
    assert status_main(["--broker", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"broker URL {url!r}" in err


def test_push_of_a_file_with_a_lone_surrogate_in_meta_is_exit_2(tmp_path, capsys):
    meta = make_meta(hidden=8, version=6, created="2026-01-01T00:00:00+00:00", notes="\ud800")
    path = tmp_path / "policy.npz"
    path.write_bytes(raw_npz(_entries(6, meta=npy(np.array(json.dumps(meta, ensure_ascii=False))))))
    # the broker is never contacted: the file is refused first
    assert push_main([str(path), "--device", "d1", "--broker", "mqtt://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lone surrogate" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flag", [["--password", "hunter2"], ["--password=hunter2"], ["--password"]]
)
def test_a_password_flag_is_refused_without_echoing_it(flag, tmp_path, capsys):
    """argparse took --password as an abbreviation of --password-file and printed the password
    in 'cannot read' errors."""
    assert status_main(["--broker", "mqtt://127.0.0.1:9", *flag]) == 2
    policy = tmp_path / "policy.npz"
    policy.write_bytes(b"never read")
    assert push_main([str(policy), "--fleet", "--broker", "mqtt://127.0.0.1:9", *flag]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "hunter2" not in err
    assert "--password is not accepted" in err and "REINFORCE_EDGE_MQTT_PASSWORD" in err
