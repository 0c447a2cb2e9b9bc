"""`export push/status` ask again for a refused status subscription (SUBACK 0x80, as NATS
answers while JetStream settles) and fail with one line, exit 1, when it stays refused."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

import export.push
from export.push import read_statuses, status_main
from runtime.mqtt import broker_settings

GRANTED = ReasonCode(PacketTypes.SUBACK, identifier=1)
REFUSED = ReasonCode(PacketTypes.SUBACK, identifier=0x80)
ACCEPTED = ReasonCode(PacketTypes.CONNACK, identifier=0)


class RefusingBroker:
    """Plays paho's client and the broker: refuses the first `refusals` subscriptions."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.subscriptions: list[list[tuple[str, int]]] = []
        self.on_connect = self.on_message = self.on_subscribe = self.on_disconnect = None

    def __call__(self, settings, client_id, **options):  # stands in for runtime.mqtt.make_client
        return self

    def connect(self, host, port, keepalive=60) -> None:
        pass

    def loop_start(self) -> None:
        self.on_connect(self, None, {}, ACCEPTED, None)

    def subscribe(self, topics):
        self.subscriptions.append(topics)
        code = REFUSED if len(self.subscriptions) <= self.refusals else GRANTED
        answer = (self, None, len(self.subscriptions), [code] * len(topics), None)
        threading.Timer(0.01, self.on_subscribe, answer).start()  # from the network thread
        return 0, len(self.subscriptions)

    def publish(self, topic, payload, qos=0, retain=False):
        if topic.endswith(self.subscriptions[-1][-1][0].rsplit("/", 1)[1]):  # the marker
            message = SimpleNamespace(topic=topic, payload=payload, retain=False)
            self.on_message(self, None, message)

    def disconnect(self) -> None:
        pass

    def loop_stop(self) -> None:
        pass


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(export.push, "SUBSCRIBE_RETRY_DELAYS_S", (0.01, 0.02, 0.04))


def test_a_refused_status_subscription_is_asked_for_again(monkeypatch):
    broker = RefusingBroker(refusals=2)
    monkeypatch.setattr(export.push, "make_client", broker)
    assert read_statuses(broker_settings("mqtt://127.0.0.1"), "p", timeout=5) == {}
    assert len(broker.subscriptions) == 3
    assert broker.subscriptions[0][0] == ("p/devices/+/status", export.push.STATUS_QOS)


def test_a_subscription_refused_to_the_end_is_one_line_and_exit_1(monkeypatch, capsys):
    broker = RefusingBroker(refusals=100)
    monkeypatch.setattr(export.push, "make_client", broker)
    code = status_main(["--broker", "mqtt://127.0.0.1", "--topic-prefix", "p", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 1 and len(broker.subscriptions) == 4  # the first and three retries
    assert err.strip() == (
        "error: broker mqtt://127.0.0.1:1883 refused the subscription to p/devices/+/status:"
        " Unspecified error"
    )
