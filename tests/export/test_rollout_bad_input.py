"""Bad input to `python -m export rollout` (and bad keys messages): one clear line, exit 2, and
nothing lost: no push goes out, devices keep their policy, files on disk stay as they were."""

from __future__ import annotations

import fcntl
import hashlib
import json

import pytest

from export.cli import main as export_main
from export.keyset import main as keys_main
from export.rollout import main
from runtime.keyset import make_keys_message, raw_public_bytes
from tests.export.rollout_support import Fleet, PushCounter, rollout_argv
from tests.ota_support import PREFIX, Device, new_key, signed_policy

NO_BROKER = "mqtt://127.0.0.1:1"  # nothing listens: a check that connected would exit 1
GOOD = ["--waves", "50%,100%", "--abort-above", "10%"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def files(tmp_path):
    key, pub = new_key(tmp_path)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(6, key))
    previous = tmp_path / "previous.npz"
    previous.write_bytes(signed_policy(5, key))
    (tmp_path / "fleet.txt").write_text("pi-00\npi-01\n")
    (tmp_path / "empty.txt").write_text("# nobody yet\n\n")
    (tmp_path / "bad-id.txt").write_text("pi-00\npi 01\n")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    return {
        "policy": policy,
        "previous": previous,
        "pub": pub,
        "tmp": tmp_path,
        "key": key,
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--waves", "25%,5%,100%"], "must increase"),
        (["--waves", "5%,25%,90%"], "the last wave must be 100%"),
        (["--waves", "50%,150%"], "each percentage must be in (0, 100]"),
        (["--waves", "0%,100%"], "each percentage must be in (0, 100]"),
        (["--waves", "5%,,100%"], "expected a percentage"),
        (["--waves", "five"], "--waves 'five': expected a percentage"),
        (["--waves=-5%,100%"], "expected a percentage"),
        (["--abort-above", "ten"], "--abort-above 'ten'"),
        (["--abort-above", "100%"], "--abort-above must be in 0%..99.9%"),
        (["--min-devices", "0"], "--min-devices must be at least 1"),
        (["--wave-timeout", "0"], "--wave-timeout must be in"),
        (["--wave-timeout", "nan"], "--wave-timeout must be in"),
        (["--devices", "{tmp}/missing.txt"], "cannot read"),
        (["--devices", "{tmp}/empty.txt"], "lists no device ids"),
        (["--devices", "{tmp}/bad-id.txt"], "bad-id.txt:2: 'pi 01' is not a device id"),
        (["--devices", "{tmp}/fleet.txt", "--all-online"], "not allowed with"),
        (["--undo"], "--undo needs --previous POLICY and --sign-key KEY"),
        (["--previous", "{previous}"], "--previous and --sign-key are for --undo"),
        (["--undo", "--previous", "{tmp}/no.npz", "--sign-key", "{pub}"], "--previous"),
        (["--undo", "--previous", "{previous}", "--sign-key", "{pub}"], "is a public key"),
        (["--topic-prefix", "a/#"], "--topic-prefix"),
        (["--broker", "http://x"], "mqtt:// or mqtts://"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2_before_connecting(files, capsys, extra, message):
    argv = [str(files["policy"]), "--broker", NO_BROKER, *GOOD]
    if "--devices" not in extra:
        argv.append("--all-online")
    argv += [a.format(**files) for a in extra]
    code, out, err = run(argv, capsys)
    assert code == 2, err
    assert message in one_line(err) and not out
    assert not list(files["tmp"].glob("rollout-*.json"))


def test_a_policy_that_is_not_one_is_refused(files, capsys):
    argv = [str(files["tmp"] / "garbage.npz"), "--broker", NO_BROKER, "--all-online", *GOOD]
    code, _, err = run(argv, capsys)
    assert code == 2 and "not a readable zip" in one_line(err)


@pytest.fixture
def fleet(files, broker):
    fleet = Fleet(files["tmp"], broker.port, files["key"], files["pub"], 3)
    counter = PushCounter(broker.port)
    yield fleet, counter
    counter.close()
    fleet.stop()


def test_unknown_devices_are_named_and_nothing_is_sent(files, broker, fleet, capsys):
    devices = files["tmp"] / "typo.txt"
    devices.write_text("pi-00\npi-O1\npi-02\nghost\n")
    state = files["tmp"] / "state.json"
    argv = rollout_argv(files["policy"], broker.port, state, "--devices", str(devices), *GOOD)
    code, out, err = run(argv, capsys)
    line = one_line(err)
    assert code == 2 and not out
    assert "2 of the 4 devices have no status on the broker" in line
    assert "ghost, pi-O1" in line
    assert not state.exists() and not fleet[1].counts
    assert set(fleet[0].versions().values()) == {5}


def test_duplicates_in_the_device_file_get_one_push_and_a_note(files, broker, fleet, capsys):
    devices = files["tmp"] / "twice.txt"
    devices.write_text("pi-01  # the canary\npi-00\npi-01\n")
    state = files["tmp"] / "state.json"
    argv = rollout_argv(files["policy"], broker.port, state, "--devices", str(devices), *GOOD)
    code = export_main(["rollout", *argv])  # the command itself: its warnings go to stderr
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "lists 1 ids more than once; each device gets one push" in err
    assert fleet[1].counts == {"pi-00": 1, "pi-01": 1}


def test_all_online_with_nobody_online_is_exit_2(files, broker, capsys):
    argv = rollout_argv(files["policy"], broker.port, files["tmp"] / "s.json", "--all-online")
    code, _, err = run([*argv, *GOOD], capsys)
    assert code == 2 and "no device's status says online" in one_line(err)


def test_an_unreachable_broker_is_exit_1(files, capsys):
    argv = [str(files["policy"]), "--broker", NO_BROKER, "--all-online", *GOOD]
    argv += ["--state", str(files["tmp"] / "s.json")]
    code, _, err = run(argv, capsys)
    assert code == 1 and "cannot connect" in one_line(err)
    assert not (files["tmp"] / "s.json").exists()


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("{", [], "not valid JSON (damaged?); move it away to start over"),
        ('{"format": "other"}', [], "not a rollout state"),
        (None, ["--policy-of-another"], "is the rollout of another file"),
        (None, ["--waves", "20%,100%"], "began with other --waves"),
        (None, ["--devices-other"], "began with another device list"),
    ],
)
def test_a_state_that_is_damaged_or_foreign_is_refused_and_kept(
    files, broker, fleet, capsys, content, extra, message
):
    state = files["tmp"] / "state.json"
    devices = files["tmp"] / "fleet.txt"
    argv = rollout_argv(files["policy"], broker.port, state, "--devices", str(devices), *GOOD)
    if content is None:  # a real state, from a finished rollout
        assert main(argv) == 0
        capsys.readouterr()
    else:
        state.write_text(content)
    before = state.read_bytes()
    pushes = dict(fleet[1].counts)
    if extra == ["--policy-of-another"]:
        other = files["tmp"] / "other.npz"
        other.write_bytes(signed_policy(7, files["key"]))
        argv[0] = str(other)
    elif extra == ["--devices-other"]:
        (files["tmp"] / "other.txt").write_text("pi-00\npi-01\npi-02\n")
        argv[argv.index(str(devices))] = str(files["tmp"] / "other.txt")
    else:
        argv += extra
    code, out, err = run(argv, capsys)
    assert code == 2 and message in one_line(err) and not out
    assert state.read_bytes() == before and dict(fleet[1].counts) == pushes


def test_a_second_rollout_on_the_same_state_is_refused(files, capsys):
    state = files["tmp"] / "state.json"
    with open(state.with_name("state.json.lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        argv = [str(files["policy"]), "--broker", NO_BROKER, "--all-online", *GOOD]
        code, _, err = run([*argv, "--state", str(state)], capsys)
    assert code == 2 and "another rollout is running with this state file" in one_line(err)


# --- keys messages with a bad signature or an old version, through `keys push` -------------


def test_keys_push_of_a_forged_or_old_key_set_is_rejected_and_changes_nothing(
    tmp_path, broker, capsys
):
    key, pub = new_key(tmp_path, "a")
    b_key, _ = new_key(tmp_path, "b")
    device = Device(tmp_path, broker.port, key, pub)
    raw = [raw_public_bytes(k.public_key()) for k in (key, b_key)]
    try:
        current = tmp_path / "keyset-2.json"
        current.write_bytes(make_keys_message(2, raw, [], key))
        argv = ["--device", "dev-1", "--broker", broker.url, "--topic-prefix", PREFIX]
        assert keys_main(["push", str(current), *argv]) == 0
        capsys.readouterr()
        forged_body = json.loads(make_keys_message(3, raw[1:], [raw[0]], key))
        forged_body["version"] = 4  # changed after signing
        forged = tmp_path / "forged.json"
        forged.write_text(json.dumps(forged_body))
        old = tmp_path / "keyset-1.json"
        old.write_bytes(make_keys_message(1, raw, [], key))
        results = {}
        for name, path in (("forged", forged), ("old", old)):
            code = keys_main(["push", str(path), *argv, "--json"])
            results[name] = (code, json.loads(capsys.readouterr().out)[0])
    finally:
        device.stop()
    assert results["forged"][0] == 1 and results["forged"][1]["result"] == "rejected"
    assert "signature check failed" in results["forged"][1]["reason"]
    assert results["old"][0] == 1 and results["old"][1]["result"] == "rejected"
    assert "keys version 1 is not newer than version 2" in results["old"][1]["reason"]
    assert device.agent.keyset.version == 2
    assert device.agent.keyset.sha256 == hashlib.sha256(current.read_bytes()).hexdigest()


def test_a_state_the_disk_refuses_stops_before_anything_is_sent(
    files, broker, fleet, capsys, monkeypatch
):
    import errno

    import export.waves

    def disk_full(path, data, mode=0o644):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export.waves, "atomic_write", disk_full)
    argv = rollout_argv(files["policy"], broker.port, files["tmp"] / "s.json", "--all-online")
    code, out, err = run([*argv, *GOOD], capsys)
    line = one_line(err)
    assert code == 1 and not out
    assert "cannot write: No space left on device; stopped, nothing more is sent" in line
    assert not fleet[1].counts and set(fleet[0].versions().values()) == {5}
