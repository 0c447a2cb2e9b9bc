"""Audit of issue 5: `export push/status` inputs no other test gives: one line, exit 2."""

from __future__ import annotations

import pytest

from export.push import status_main


@pytest.mark.parametrize(
    "url", ["mqtt://[::1", "mqtt://[zz::1]:1883", "mqtts://[::1:1883", "mqtt://[]:1883"]
)
def test_a_broken_ipv6_url_is_one_line_naming_the_url(url, capsys):
    assert status_main(["--broker", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"broker URL {url!r}" in err
