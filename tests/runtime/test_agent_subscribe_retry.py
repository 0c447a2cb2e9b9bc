"""A refused subscription (SUBACK 0x80, as NATS answers while JetStream settles) is asked for
again with backoff; the device says "online" only once its policy topics are subscribed, or
after the last retry with one ERROR line naming what is missing, and then keeps asking."""

from __future__ import annotations

import json
import logging
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

import runtime.agent
from runtime.agent import Agent, AgentConfig
from runtime.mqtt import BrokerSettings
from runtime.policy import parse_policy
from runtime.slot import PolicySlot
from runtime.state import StateStore
from tests.ota_support import activate, signed_policy

GRANTED = ReasonCode(PacketTypes.SUBACK, identifier=1)
REFUSED = ReasonCode(PacketTypes.SUBACK, identifier=0x80)
SUCCESS = ReasonCode(PacketTypes.CONNACK, identifier=0)


class FakeClient:
    """Records what the agent asks of paho; the test plays the broker's answers."""

    def __init__(self) -> None:
        self.subscribed: list[tuple[int, list[tuple[str, int]]]] = []
        self.published: list[tuple[str, dict]] = []

    def subscribe(self, topics, qos=0):
        wanted = topics if isinstance(topics, list) else [(topics, qos)]
        mid = len(self.subscribed) + 1
        self.subscribed.append((mid, wanted))
        return 0, mid

    def publish(self, topic, payload, qos=0, retain=False):
        self.published.append((topic, json.loads(payload)))

    def will_set(self, *args, **kwargs) -> None:
        pass

    def wait_for(self, count: int, timeout: float = 5.0) -> tuple[int, list[tuple[str, int]]]:
        deadline = time.monotonic() + timeout
        while len(self.subscribed) < count:
            assert time.monotonic() < deadline, f"only {self.subscribed}"
            time.sleep(0.005)
        return self.subscribed[count - 1]


@pytest.fixture
def agent(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime.agent, "SUBSCRIBE_RETRY_DELAYS_S", (0.01, 0.02, 0.04))
    agent = Agent(
        AgentConfig(device_id="pi-1", topic_prefix="t", allow_unsigned=True),
        BrokerSettings(host="127.0.0.1", port=1),  # never started: the fake plays the broker
        PolicySlot(activate(parse_policy(signed_policy(5, None)))),
        activate,
        StateStore(tmp_path / "state"),
    )
    agent.client = FakeClient()
    agent._on_connect(agent.client, None, {}, SUCCESS, None)
    return agent


def statuses(agent: Agent) -> list[str]:
    return [body["state"] for topic, body in agent.client.published if topic.endswith("/status")]


def test_a_refused_policy_subscription_is_retried_and_online_waits_for_it(agent, caplog):
    caplog.set_level(logging.DEBUG, logger="runtime.agent")
    client = agent.client
    (watch_mid, _), (mid, wanted) = client.subscribed
    assert [topic for topic, _ in wanted] == [
        "t/devices/pi-1/keys",
        "t/fleet/keys",
        "t/devices/pi-1/policy",
        "t/fleet/policy",
    ]
    agent._on_subscribe(client, None, watch_mid, [GRANTED], None)
    agent._on_subscribe(client, None, mid, [GRANTED, REFUSED, GRANTED, REFUSED], None)
    assert not agent.ready.is_set() and statuses(agent) == []
    retry_mid, retried = client.wait_for(3)
    assert retried == [("t/fleet/keys", 1), ("t/fleet/policy", 1)]  # only the refused ones
    agent._on_subscribe(client, None, retry_mid, [REFUSED, GRANTED], None)
    again_mid, again = client.wait_for(4)
    assert again == [("t/fleet/keys", 1)]
    agent._on_subscribe(client, None, again_mid, [GRANTED], None)
    assert agent.ready.is_set() and statuses(agent) == ["online"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    line = warnings[0].getMessage()
    assert "refused the subscriptions to t/fleet/keys, t/fleet/policy" in line
    assert "(Unspecified error); retrying in 0.01 s" in line


def test_after_the_last_retry_the_device_goes_online_and_keeps_asking(agent, caplog):
    caplog.set_level(logging.WARNING, logger="runtime.agent")
    client = agent.client
    mid = client.subscribed[1][0]
    for attempt in range(4):  # the first answer and three retries, all refused
        assert not agent.ready.is_set()
        agent._on_subscribe(client, None, mid, [REFUSED] * 4, None)
        mid, wanted = client.wait_for(3 + attempt)
        assert len(wanted) == 4
    assert agent.ready.is_set() and statuses(agent) == ["online"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "4 times" in errors[0] and "t/devices/pi-1/policy" in errors[0]
    assert "asking again every 0.04 s" in errors[0]
    agent._on_subscribe(client, None, mid, [REFUSED] * 4, None)  # still refused: quiet
    mid, _ = client.wait_for(7)
    agent._on_subscribe(client, None, mid, [GRANTED] * 4, None)  # the broker recovered
    time.sleep(0.1)
    assert len(client.subscribed) == 7 and statuses(agent) == ["online"]  # no second status
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[-1].endswith("granted the refused subscriptions")


def test_a_disconnect_cancels_a_pending_retry(agent, monkeypatch):
    client = agent.client
    monkeypatch.setattr(runtime.agent, "SUBSCRIBE_RETRY_DELAYS_S", (0.2,))
    agent._on_subscribe(client, None, client.subscribed[1][0], [REFUSED] * 4, None)
    agent._on_disconnect(client, None, {}, SUCCESS, None)
    time.sleep(0.4)
    assert len(client.subscribed) == 2 and not agent.ready.is_set()
