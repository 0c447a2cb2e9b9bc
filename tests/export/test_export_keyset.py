"""`python -m export keys sign|push`: the key-set change it writes, its bad input, and the
leaked-key drill of docs/ota.md run command for command against a real runtime and broker."""

from __future__ import annotations

import hashlib
import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from export.cli import main
from runtime.keyset import KeySet, apply_keys_message, key_id, raw_public_bytes
from runtime.signing import load_public_key
from tests.ota_support import PREFIX, RuntimeProcess, Watcher, signed_policy, update_result

ROOT = Path(__file__).resolve().parents[2]


def keygen(directory: Path) -> tuple[Path, Path]:
    assert main(["keygen", "--out", str(directory)]) == 0
    return directory / "signing.key", directory / "signing.pub"


def raw(pub: Path) -> bytes:
    return raw_public_bytes(load_public_key(pub))


def test_sign_writes_a_message_the_device_applies(tmp_path, capsys):
    old_key, old_pub = keygen(tmp_path / "old")
    _, new_pub = keygen(tmp_path / "new")
    out = tmp_path / "keyset.json"
    argv = ["keys", "sign", "--version", "4", "--key", str(new_pub), "--revoke", str(old_pub)]
    assert main([*argv, "--sign-key", str(old_key), "--out", str(out)]) == 0
    assert f"keys {key_id(raw(new_pub))}; revoked {key_id(raw(old_pub))}" in capsys.readouterr().out
    applied = apply_keys_message(out.read_bytes(), KeySet((raw(old_pub),)))
    assert applied.keys == (raw(new_pub),) and applied.revoked == (raw(old_pub),)
    assert applied.version == 4 and json.loads(out.read_bytes())["signer"] == key_id(raw(old_pub))


@pytest.mark.parametrize(
    "change, fragment",
    [
        (["--version", "0"], "must be a positive integer"),
        (["--key", "{priv}"], "this is a private key"),
        (["--key", "{missing}"], "cannot read"),
        (["--revoke", "{pub}"], "both trusted and revoked"),
        (["--sign-key", "{pub}"], "is a public key"),
        (["--out", "{missing_dir}/k.json"], "cannot write"),
    ],
)
def test_bad_sign_input_is_one_line_and_exit_2(tmp_path, capsys, change, fragment):
    priv, pub = keygen(tmp_path / "k")
    names = {
        "priv": priv,
        "pub": pub,
        "missing": tmp_path / "nope.pub",
        "missing_dir": tmp_path / "no/such",
    }
    change = [part.format(**names) for part in change]
    argv = {"--version": "1", "--key": str(pub), "--sign-key": str(priv)}
    argv["--out"] = str(tmp_path / "out.json")
    extra = []
    for flag, value in zip(change[::2], change[1::2], strict=True):
        if flag == "--revoke":
            extra += [flag, value]
        else:
            argv[flag] = value
    args = ["keys", "sign", *[x for pair in argv.items() for x in pair], *extra]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_keys_push_refuses_a_file_that_is_not_a_keys_message(tmp_path, capsys):
    _, pub = keygen(tmp_path / "k")
    capsys.readouterr()
    assert main(["keys", "push", str(pub), "--fleet", "--broker", "mqtt://127.0.0.1:1"]) == 2
    assert "keys message is not valid JSON" in capsys.readouterr().err
    assert main(["keys", "rotate"]) == 2


# --- the drill, as docs/ota.md writes it ------------------------------------------------------


def drill_commands() -> list[list[str]]:
    """The commands of the first shell block under "### Leaked-key drill" in docs/ota.md."""
    text = (ROOT / "docs/ota.md").read_text(encoding="utf-8")
    block = text.split("### Leaked-key drill", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line]


def run_command(argv: list[str], cwd: Path, broker_url: str) -> subprocess.CompletedProcess:
    assert argv[:2] == ["python", "-m"], argv
    argv = [sys.executable, *argv[1:]]
    argv = [broker_url if arg == "mqtt://broker.lan" else arg for arg in argv]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_the_leaked_key_drill_of_the_docs(tmp_path, broker):
    fleet = tmp_path / "fleet"  # the operator's directory
    leaked, leaked_pub = keygen(fleet / "keys")
    keygen(fleet / "backup")
    device_keys = tmp_path / "device-keys"  # what a board holds: public keys only
    device_keys.mkdir()
    (device_keys / "backup.pub").write_bytes((fleet / "backup/signing.pub").read_bytes())
    source = tmp_path / "trained.npz"
    source.write_bytes(signed_policy(1, None))
    argv = [str(source), "--out", str(fleet / "dist"), "--sign", str(leaked), "--version", "42"]
    assert main(argv) == 0
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    run = tmp_path / "run"
    start = (run, broker.port, leaked_pub, fleet / "dist/policy.npz")
    process = RuntimeProcess(*start, "--trusted-keys-dir", str(device_keys))

    def online(_: str, body: dict) -> bool:
        return body.get("state") == "online" and body.get("device_id") == "pi-1"

    try:
        watcher.wait_for(online, timeout=15)
        prefix = ["--topic-prefix", PREFIX]
        for argv in drill_commands():
            if argv[3] in ("push", "status") or argv[3:5] == ["keys", "push"]:
                argv = [*argv, *prefix]
            result = run_command(argv, fleet, broker.url)
            assert result.returncode == 0, (argv, result.stdout, result.stderr)
        assert "pi-1" in result.stdout  # the status table
        status = watcher.latest[f"{PREFIX}/devices/pi-1/status"]
        assert status["policy_version"] == 43 and status["keys_version"] == 1, status
        assert key_id(raw(leaked_pub)) not in status["key_ids"]

        forged = signed_policy(44, _private(leaked))  # what the thief would push
        watcher.publish(f"{PREFIX}/devices/pi-1/policy", forged)
        reason = watcher.wait_for(update_result(hashlib.sha256(forged).hexdigest()))
        assert "signed by revoked key" in reason["last_update"]["reason"]

        process.kill(signal.SIGTERM)
        process = RuntimeProcess(*start, "--trusted-keys-dir", str(device_keys))
        status = watcher.wait_for(online, timeout=15)
        assert status["policy_version"] == 43 and status["keys_version"] == 1, status
        watcher.publish(f"{PREFIX}/devices/pi-1/policy", forged)
        reason = watcher.wait_for(update_result(hashlib.sha256(forged).hexdigest()))
        assert "signed by revoked key" in reason["last_update"]["reason"]
    finally:
        process.kill(signal.SIGTERM)
        for topic in ("fleet/policy", "fleet/keys"):  # leave no retained messages behind
            watcher.publish(f"{PREFIX}/{topic}", b"", retain=True)
        watcher.close()


def _private(path: Path):
    from export.keys import load_private_key

    return load_private_key(path)
