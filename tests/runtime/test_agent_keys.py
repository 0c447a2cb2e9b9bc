"""Key rotation on the device: the keys message's rules, then a real `python -m runtime` agent on
a real Mosquitto rotating its keys, refusing revoked ones, and keeping all of it over restarts."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
from pathlib import Path

import pytest

from runtime.constants import KEYSET_SIGNATURE_DOMAIN, MAX_REVOKED_KEYS, MAX_TRUSTED_KEYS
from runtime.keyset import (
    KeySet,
    apply_keys_message,
    key_id,
    keyset_state_bytes,
    make_keys_message,
    raw_public_bytes,
    read_keyset_state,
    signed_keyset_bytes,
)
from runtime.policy import PolicyError, parse_policy
from runtime.signing import verify_policy
from runtime.updates import AlreadyRunning, Stale, UpdateRejected
from tests.ota_support import PREFIX, RuntimeProcess, Watcher, new_key, signed_policy, update_result


def raw(private_key) -> bytes:
    return raw_public_bytes(private_key.public_key())


@pytest.fixture
def trio(tmp_path):
    """Three key pairs: a, b, c (private key, public key file)."""
    return {name: new_key(tmp_path, name) for name in "abc"}


def test_the_signature_covers_the_domain_and_the_canonical_json(trio):
    a = trio["a"][0]
    data = make_keys_message(3, [raw(a)], [], a)
    body = json.loads(data)
    signed = signed_keyset_bytes(body)
    assert signed.startswith(KEYSET_SIGNATURE_DOMAIN)
    fields = {k: v for k, v in body.items() if k != "signature"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    assert signed == KEYSET_SIGNATURE_DOMAIN + canonical
    a.public_key().verify(base64.b64decode(body["signature"]), signed)
    assert body["signer"] == key_id(raw(a)) == hashlib.sha256(raw(a)).hexdigest()[:16]
    # the same key and content sign to the same bytes (Ed25519 is deterministic)
    assert make_keys_message(3, [raw(a)], [], a) == data


def test_a_keys_message_rotates_and_revokes(trio):
    a, b, c = (trio[n][0] for n in "abc")
    current = KeySet((raw(a),))
    data = make_keys_message(1, [raw(b), raw(c)], [raw(a)], a)
    new = apply_keys_message(data, current)
    assert set(new.keys) == {raw(b), raw(c)} and new.revoked == (raw(a),)
    assert new.version == 1 and new.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(AlreadyRunning):  # the retained message again: a quiet no-op
        apply_keys_message(data, new)
    policy = parse_policy(signed_policy(6, a))
    with pytest.raises(PolicyError, match=f"signed by revoked key {key_id(raw(a))}"):
        verify_policy(policy, new)
    verify_policy(parse_policy(signed_policy(6, c)), new)
    assert read_keyset_state(_write(trio, keyset_state_bytes(new))) == new


def _write(trio, data: bytes) -> Path:
    path = trio["a"][1].parent / "keys.json"
    path.write_bytes(data)
    return path


def _tampered(data: bytes, **changes) -> bytes:
    body = json.loads(data)
    body.update(changes)
    return json.dumps(body).encode()


def refusals(trio) -> list[tuple[str, bytes, KeySet, str]]:
    a, b, c = (trio[n][0] for n in "abc")
    start = KeySet((raw(a), raw(b)))
    after = KeySet((raw(b),), (raw(a),), 5, "0" * 64)
    good = make_keys_message(6, [raw(b), raw(c)], [], b)
    return [
        ("empty", b"", start, "empty keys message"),
        ("huge", b"{" + b" " * 70_000 + b"}", start, "more than"),
        ("not JSON", b"\xff\xfe", start, "not valid JSON"),
        ("NaN", b'{"version": NaN}', start, "not valid JSON"),
        ("a list", b"[1]", start, "JSON object"),
        ("extra field", _tampered(good, note="x"), start, "fields are"),
        ("wrong format", _tampered(good, format="x"), start, "format is"),
        ("version 0", _tampered(good, version=0), start, "version must be"),
        ("version true", _tampered(good, version=True), start, "version must be"),
        ("keys not a list", _tampered(good, keys="abc"), start, "keys must be a list"),
        ("key not base64", _tampered(good, keys=["!!"]), start, "not base64"),
        ("short key", _tampered(good, keys=[base64.b64encode(b"x" * 31).decode()]), start, "31 bytes"),
        ("duplicate key", _tampered(good, keys=[base64.b64encode(raw(c)).decode()] * 2), start, "twice"),
        ("too many keys", _tampered(good, keys=["A" * 44] * (MAX_TRUSTED_KEYS + 1)), start, "at most"),
        ("too many revoked", _tampered(good, revoked=["A" * 44] * (MAX_REVOKED_KEYS + 1)), start, "at most"),
        ("bad signer", _tampered(good, signer="Z"), start, "signer must be"),
        ("short signature", _tampered(good, signature="AAAA"), start, "expected 64"),
        ("bad signature", _tampered(good, version=7), start, "signature check failed"),
        ("unknown signer", make_keys_message(6, [raw(b)], [], c), start, "not a trusted key"),
        ("revoked signer", make_keys_message(6, [raw(b)], [], a), after, "signed by revoked key"),
        ("old version", make_keys_message(4, [raw(b)], [], b), after, "not newer than version 5"),
        ("same version, other content", make_keys_message(5, [raw(b), raw(c)], [], b), after, "already applied"),
        ("empty set", make_keys_message_unchecked(b, 6, [], []), start, "empty"),
        ("re-adding a revoked key", make_keys_message(6, [raw(a), raw(b)], [], b), after, "never trusted again"),
        ("both trusted and revoked", _both(good, c), start, "both in keys and in revoked"),
    ]  # fmt: skip


def make_keys_message_unchecked(private_key, version, keys, revoked) -> bytes:
    """A message the fleet-side tool refuses to make (an empty set), signed all the same."""
    body = {
        "format": "reinforce-edge/keyset",
        "version": version,
        "keys": [base64.b64encode(k).decode() for k in keys],
        "revoked": [base64.b64encode(k).decode() for k in revoked],
        "signer": key_id(raw(private_key)),
    }
    body["signature"] = base64.b64encode(private_key.sign(signed_keyset_bytes(body))).decode()
    return json.dumps(body).encode()


def _both(good: bytes, key) -> bytes:
    return _tampered(good, revoked=[base64.b64encode(raw(key)).decode()])


def test_every_bad_keys_message_is_refused_with_its_reason(trio):
    cases = refusals(trio)
    for name, data, current, fragment in cases:
        with pytest.raises(UpdateRejected) as refused:
            apply_keys_message(data, current)
        assert fragment in refused.value.reason, (name, refused.value.reason)
        assert "\n" not in refused.value.reason
    old = next(data for name, data, _, _ in cases if name == "old version")
    with pytest.raises(Stale):  # quiet when merely retained
        apply_keys_message(old, KeySet((raw(trio["b"][0]),), (), 5, "0" * 64))


def test_a_damaged_persisted_key_set_names_the_file_and_never_falls_back(tmp_path):
    for junk in (b"", b"{", b'{"format": "x"}', b"[]"):
        path = tmp_path / "keys.json"
        path.write_bytes(junk)
        with pytest.raises(PolicyError, match="keys.json is damaged.*delete it"):
            read_keyset_state(path)
    assert read_keyset_state(tmp_path / "absent.json") is None


# --- end to end: `python -m runtime` on the real broker -----------------------------------


def keys_topic(device: str = "pi-1") -> str:
    return f"{PREFIX}/devices/{device}/keys"


def policy_topic(device: str = "pi-1") -> str:
    return f"{PREFIX}/devices/{device}/policy"


def send(watcher: Watcher, topic: str, data: bytes) -> dict:
    watcher.publish(topic, data)
    return watcher.wait_for(update_result(hashlib.sha256(data).hexdigest()), timeout=10)


def online(watcher: Watcher, process: RuntimeProcess) -> dict:
    def match(topic: str, body: dict) -> bool:
        return body.get("state") == "online" and body.get("device_id") == "pi-1"

    try:
        return watcher.wait_for(match, timeout=15)
    except AssertionError:
        raise AssertionError(process.log()) from None


def test_rotation_survives_restarts_and_refuses_revoked_keys(tmp_path, broker, trio):
    (a, a_pub), (c, _), (d, _) = trio["a"], trio["b"], trio["c"]
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(3, a))
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    process = RuntimeProcess(tmp_path / "run", broker.port, a_pub, policy)
    try:
        first = online(watcher, process)
        assert first["keys_version"] == 0 and first["key_ids"] == [key_id(raw(a))]
        k1 = make_keys_message(1, [raw(c)], [raw(a)], a)  # rotate a -> c, signed by a
        status = send(watcher, keys_topic(), k1)
        assert status["last_update"]["kind"] == "keys"
        assert status["last_update"]["result"] == "applied", status
        assert (
            "running policy version 3 is signed by revoked key" in status["last_update"]["reason"]
        )
        assert status["keys_version"] == 1 and status["key_ids"] == [key_id(raw(c))]
        status = send(watcher, policy_topic(), signed_policy(6, c))
        assert status["last_update"]["result"] == "applied" and status["policy_version"] == 6
        status = send(watcher, policy_topic(), signed_policy(7, a))
        assert status["last_update"]["result"] == "rejected"
        assert f"signed by revoked key {key_id(raw(a))}" in status["last_update"]["reason"]

        process.kill(signal.SIGTERM)
        process = RuntimeProcess(tmp_path / "run", broker.port, a_pub, policy)
        status = online(watcher, process)
        assert status["keys_version"] == 1 and status["policy_version"] == 6, status
        status = send(watcher, policy_topic(), signed_policy(8, a))
        assert "signed by revoked key" in status["last_update"]["reason"]

        k2 = make_keys_message(2, [raw(c), raw(d)], [], c)
        assert send(watcher, keys_topic(), k2)["last_update"]["result"] == "applied"
        status = send(watcher, keys_topic(), k1)  # replayed
        assert status["last_update"]["result"] == "rejected"
        assert "keys version 1 is not newer than version 2" in status["last_update"]["reason"]
        by_revoked = make_keys_message(3, [raw(a), raw(c)], [], a)  # newer, by the revoked a
        status = send(watcher, keys_topic(), by_revoked)
        assert f"signed by revoked key {key_id(raw(a))}" in status["last_update"]["reason"]
        k3 = make_keys_message(3, [raw(d)], [raw(c)], d)
        status = send(watcher, keys_topic(), k3)
        assert status["last_update"]["result"] == "applied"
        assert (
            "running policy version 6 is signed by revoked key" in status["last_update"]["reason"]
        )
        assert send(watcher, policy_topic(), signed_policy(9, d))["policy_version"] == 9
        old = make_keys_message(2, [raw(d)], [], d)  # trusted signer, old version
        status = send(watcher, keys_topic(), old)
        assert "keys version 2 is not newer than version 3" in status["last_update"]["reason"]
        forged = _tampered(make_keys_message(4, [raw(d)], [], d), version=5)
        status = send(watcher, keys_topic(), forged)
        assert "signature check failed" in status["last_update"]["reason"]
        assert status["keys_version"] == 3 and status["policy_version"] == 9
        state = json.loads((tmp_path / "run/state/keys.json").read_text())
        assert state["version"] == 3 and len(state["revoked"]) == 2

        process.kill(signal.SIGTERM)
        process = RuntimeProcess(tmp_path / "run", broker.port, a_pub, policy)
        status = online(watcher, process)
        assert status["keys_version"] == 3 and status["key_ids"] == [key_id(raw(d))]
        assert status["policy_version"] == 9
        status = send(watcher, policy_topic(), signed_policy(10, c))  # c is revoked now
        assert "signed by revoked key" in status["last_update"]["reason"]
        assert send(watcher, policy_topic(), signed_policy(10, d))["policy_version"] == 10
    finally:
        process.kill(signal.SIGTERM)
        watcher.close()
    assert "Traceback" not in process.log()


def test_a_start_with_only_a_revoked_policy_is_refused_in_one_line(tmp_path, broker, trio):
    (a, a_pub), (c, _) = trio["a"], trio["b"]
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(3, a))
    state = tmp_path / "run/state"
    state.mkdir(parents=True)
    revoked = apply_keys_message(make_keys_message(1, [raw(c)], [raw(a)], a), KeySet((raw(a),)))
    (state / "keys.json").write_bytes(keyset_state_bytes(revoked))
    process = RuntimeProcess(tmp_path / "run", broker.port, a_pub, policy)
    assert process.process.wait(timeout=30) == 2
    lines = [line for line in process.log().splitlines() if "error" in line]
    assert len(lines) == 1 and "signed by revoked key" in lines[0], process.log()


# --- fault injection: a disk that refuses the key set, a power cut mid-write ------------------


def test_a_key_set_the_disk_refuses_is_rejected_and_changes_nothing(tmp_path, broker, trio):
    import errno

    from tests.ota_support import Device

    (a, a_pub), (c, _) = trio["a"], trio["b"]
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    device = Device(tmp_path, broker.port, a, a_pub)
    try:

        def disk_full(keyset) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        device.store.commit_keyset = disk_full
        k1 = make_keys_message(1, [raw(c)], [raw(a)], a)
        watcher.publish(f"{PREFIX}/devices/dev-1/keys", k1)
        status = watcher.wait_for(update_result(hashlib.sha256(k1).hexdigest()))
        assert status["last_update"]["result"] == "rejected"
        assert "cannot persist the key set" in status["last_update"]["reason"]
        assert status["keys_version"] == 0 and not device.store.keys_path.exists()
        good = signed_policy(6, a)  # the old key still signs
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", good)
        status = watcher.wait_for(update_result(hashlib.sha256(good).hexdigest()))
        assert status["last_update"]["result"] == "applied"
    finally:
        device.stop()
        watcher.close()


def test_a_power_cut_mid_write_leaves_the_previous_key_set(tmp_path, trio):
    from runtime.state import StateStore

    (a, _), (c, _) = trio["a"], trio["b"]
    store = StateStore(tmp_path / "state", public_key=KeySet((raw(a),)))
    store.load()
    first = apply_keys_message(make_keys_message(1, [raw(c)], [raw(a)], a), store.public_key)
    store.commit_keyset(first)
    half = keyset_state_bytes(KeySet((raw(a),), (), 2, "1" * 64))[:40]
    (store.directory / ".keys.json.x1y2.tmp").write_bytes(half)  # the cut: only the temporary
    again = StateStore(store.directory, public_key=KeySet((raw(a),)))
    again.load()
    assert again.public_key == first
    assert not list(store.directory.glob(".*.tmp"))
