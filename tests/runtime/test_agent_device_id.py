"""Device ids and topic prefixes: one topic level of letters, digits and _ : -, no '.'
(NATS's MQTT gateway maps '.' to its subject separator), and the host name's default."""

from __future__ import annotations

import pytest

from runtime.agent import AgentConfig, device_id_from_hostname


@pytest.mark.parametrize("device_id", ["pi-1", "rack_3:slot-2", "A" * 64, "0"])
def test_ids_of_letters_digits_and_separators_are_allowed(device_id):
    assert AgentConfig(device_id=device_id).device_id == device_id


@pytest.mark.parametrize("device_id", ["pi.local", "pi/1", "pi+", "#", "-pi", "", "A" * 65, "a b"])
def test_other_ids_are_refused_naming_the_id_and_the_rule(device_id):
    with pytest.raises(ValueError) as refused:
        AgentConfig(device_id=device_id)
    assert f"device id {device_id!r} is not allowed" in str(refused.value)
    assert "no '.'" in str(refused.value)


@pytest.mark.parametrize("prefix", ["fleet.v2", "a/b.c", "a/+", "a//b", ""])
def test_a_prefix_with_a_dot_or_a_wildcard_is_refused(prefix):
    with pytest.raises(ValueError, match="topic prefix .* is not allowed"):
        AgentConfig(device_id="pi", topic_prefix=prefix)


@pytest.mark.parametrize(
    ("hostname", "device_id"),
    [("pi", "pi"), ("pi.local", "pi"), ("rack-3.lab.example.com", "rack-3"), ("pi_7.", "pi_7")],
)
def test_the_default_id_is_the_first_label_of_the_host_name(hostname, device_id):
    assert device_id_from_hostname(hostname) == device_id
    assert AgentConfig(device_id=device_id_from_hostname(hostname)).device_id == device_id


@pytest.mark.parametrize("hostname", [".local", "-pi.local", "my host"])
def test_a_host_name_without_a_usable_first_label_asks_for_an_id(hostname):
    with pytest.raises(ValueError, match=f"the host name {hostname!r} gives no valid device id"):
        device_id_from_hostname(hostname)
