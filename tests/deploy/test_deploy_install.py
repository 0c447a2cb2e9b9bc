"""deploy/install.sh under a temporary --prefix: install, no-op second run, dry run, uninstall."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
SCRIPTS = [
    INSTALL,
    ROOT / "deploy/mosquitto/make-certs.sh",
    ROOT / "deploy/mosquitto/add-device.sh",
]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def run_install(
    *args: str | Path, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """install.sh with the test interpreter and no virtualenv build (that needs the network)."""
    command = ["bash", str(INSTALL), "--python", sys.executable, *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode, size, mtime and content digest."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        state[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns, digest)
    return state


def installed_files(root: Path) -> list[str]:
    """Files (not directories) under root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Stand-ins for what an operator hands the script (the script only copies them)."""
    files = {
        "policy": b"PK\x03\x04 stand-in for policy.npz",
        "public-key": b"-----BEGIN PUBLIC KEY-----\n...\n",
        "ca-file": b"-----BEGIN CERTIFICATE-----\nca\n",
        "cert": b"-----BEGIN CERTIFICATE-----\ndevice\n",
        "key": b"-----BEGIN PRIVATE KEY-----\ndevice\n",
        "password-file": b"s3cret-password\n",
    }
    folder = tmp_path / "inputs"
    folder.mkdir()
    paths = {}
    for name, data in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


def full_args(prefix: Path, inputs: dict[str, Path]) -> list[str | Path]:
    args: list[str | Path] = ["--prefix", prefix, "--skip-venv", "--device-id", "pi-07"]
    args += ["--broker", "mqtts://broker.lan:8883", "--realtime", "--serial-device", "/dev/ttyUSB1"]
    for name, path in inputs.items():
        args += [f"--{name}", path]
    return args


def test_install_under_prefix_then_second_run_is_a_no_op(tmp_path, inputs):
    prefix = tmp_path / "root"
    first = run_install(*full_args(prefix, inputs), check=True)
    assert "not creating the user reinforce-edge" in first.stdout  # --prefix: no user, no chown

    etc = prefix / "etc/reinforce-edge"
    assert (etc / "policy.npz").read_bytes() == inputs["policy"].read_bytes()
    assert (etc / "fleet.pub").read_bytes() == inputs["public-key"].read_bytes()
    assert (etc / "tls/device.key").stat().st_mode & 0o077 == 0o040  # group read, no others
    assert (etc / "mqtt.env").read_text() == "REINFORCE_EDGE_MQTT_PASSWORD=s3cret-password\n"
    assert (etc / "mqtt.env").stat().st_mode & 0o777 == 0o600
    assert (prefix / "var/lib/reinforce-edge").is_dir()
    unit = prefix / "etc/systemd/system/reinforce-edge.service"
    assert unit.read_bytes() == (ROOT / "deploy/reinforce-edge.service").read_bytes()
    dropins = prefix / "etc/systemd/system/reinforce-edge.service.d"
    assert "CPUSchedulingPolicy=fifo" in (dropins / "realtime.conf").read_text()
    assert "DeviceAllow=/dev/ttyUSB1 rw" in (dropins / "serial.conf").read_text()
    assert not (prefix / "opt").exists()  # --skip-venv

    config = tomllib.loads((etc / "runtime.toml").read_text())
    assert config["broker"] == "mqtts://broker.lan:8883"
    assert config["device_id"] == config["username"] == "pi-07"
    assert config["public_key"] == "/etc/reinforce-edge/fleet.pub"  # paths on the board
    assert config["cert"] == "/etc/reinforce-edge/tls/device.crt"
    assert "s3cret" not in (etc / "runtime.toml").read_text()  # the password stays in mqtt.env

    before = snapshot(prefix)
    second = run_install(*full_args(prefix, inputs), check=True)
    assert "nothing to do" in second.stdout
    assert "edit it for the new broker" not in second.stdout  # the same broker: nothing to edit
    assert snapshot(prefix) == before
    # a certificate renewal (TLS files only) whose paths the config already names: quiet too
    renew = ["--prefix", prefix, "--skip-venv", "--cert", inputs["cert"], "--key", inputs["key"]]
    third = run_install(*renew, check=True)
    assert "nothing to do" in third.stdout and "edit it" not in third.stdout, third.stdout


def test_minimal_install_leaves_mqtt_and_tls_commented_out(tmp_path, inputs):
    prefix = tmp_path / "root"
    run_install("--prefix", prefix, "--skip-venv", "--policy", inputs["policy"], check=True)
    config = tomllib.loads((prefix / "etc/reinforce-edge/runtime.toml").read_text())
    assert config == {"policy": "/etc/reinforce-edge/policy.npz", "plant": "sim", "hz": 50}
    assert not (prefix / "etc/systemd/system/reinforce-edge.service.d").exists()


def test_runtime_toml_is_never_overwritten(tmp_path, inputs):
    prefix = tmp_path / "root"
    run_install(*full_args(prefix, inputs), check=True)
    config = prefix / "etc/reinforce-edge/runtime.toml"
    config.write_text('policy = "/etc/reinforce-edge/policy.npz"\nhz = 100\n')
    again = [*full_args(prefix, inputs)]
    again[again.index("mqtts://broker.lan:8883")] = "mqtts://other.lan:8883"
    result = run_install(*again, check=True)
    assert "kept" in result.stdout and "never overwritten" in result.stdout
    assert config.read_text() == 'policy = "/etc/reinforce-edge/policy.npz"\nhz = 100\n'


def test_a_changed_policy_is_replaced_and_reported(tmp_path, inputs):
    prefix = tmp_path / "root"
    run_install(*full_args(prefix, inputs), check=True)
    inputs["policy"].write_bytes(b"PK\x03\x04 a newer policy")
    result = run_install(*full_args(prefix, inputs), check=True)
    assert "install " + str(prefix / "etc/reinforce-edge/policy.npz") in result.stdout
    assert "1 change(s)" in result.stdout


def test_dry_run_changes_nothing(tmp_path, inputs):
    prefix = tmp_path / "root"
    result = run_install(*full_args(prefix, inputs), "--dry-run", check=True)
    assert not prefix.exists()
    assert "would install" in result.stdout and "nothing was changed" in result.stdout
    assert str(prefix / "etc/reinforce-edge/runtime.toml") in result.stdout

    run_install(*full_args(prefix, inputs), check=True)
    before = snapshot(prefix)
    inputs["policy"].write_bytes(b"PK\x03\x04 newer")
    result = run_install(*full_args(prefix, inputs), "--dry-run", check=True)
    assert "would install " + str(prefix / "etc/reinforce-edge/policy.npz") in result.stdout
    for flags in (["--uninstall"], ["--uninstall", "--purge"]):
        result = run_install("--prefix", prefix, *flags, "--dry-run", check=True)
        assert "would remove" in result.stdout
    assert snapshot(prefix) == before


def test_dry_run_plans_a_device_only_virtualenv(tmp_path):
    result = run_install("--prefix", tmp_path / "root", "--dry-run", check=True)
    plan = result.stdout
    assert f"{sys.executable} -m venv --system-site-packages" in plan
    assert "pip install .[device]" in plan  # only the core and the device extra
    assert not (tmp_path / "root").exists()


def test_uninstall_removes_what_was_installed_and_keeps_state(tmp_path, inputs):
    prefix = tmp_path / "root"
    run_install(*full_args(prefix, inputs), check=True)
    state = prefix / "var/lib/reinforce-edge"
    (state / "current.npz").write_bytes(b"an update received over MQTT")

    result = run_install("--prefix", prefix, "--uninstall", check=True)
    assert installed_files(prefix) == ["var/lib/reinforce-edge/current.npz"]
    assert "kept" in result.stdout

    result = run_install("--prefix", prefix, "--uninstall", "--purge", check=True)
    assert installed_files(prefix) == [] and not state.exists()
    result = run_install("--prefix", prefix, "--uninstall", check=True)
    assert "nothing to remove" in result.stdout


def test_uninstall_keeps_an_edited_config_unless_purged(tmp_path, inputs):
    prefix = tmp_path / "root"
    run_install(*full_args(prefix, inputs), check=True)
    config = prefix / "etc/reinforce-edge/runtime.toml"
    config.write_text(config.read_text() + "hz = 100\n")
    result = run_install("--prefix", prefix, "--uninstall", check=True)
    assert config.exists() and "it was edited" in result.stdout
    run_install("--prefix", prefix, "--uninstall", "--purge", check=True)
    assert not config.exists() and installed_files(prefix) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--policy"], "--policy needs a value"),
        (["--policy", "/nonexistent/policy.npz"], "no such file"),
        (["--public-key", "/nonexistent/fleet.pub"], "no such file"),
        (["--purge"], "--purge goes with --uninstall"),
        (["--broker", "http://broker:1883"], "expected mqtt://HOST[:PORT]"),
        (["--broker", "mqtt://broker"], "--broker needs --public-key"),
        (["--device-id", "a/b"], "--device-id 'a/b'"),
        (["--device-id", "pi:1"], "--device-id 'pi:1'"),
        (["--device-id", "pi.1"], "no '.'"),  # NATS's MQTT gateway refuses its topics
        (["--device-id", "-pi"], "--device-id '-pi'"),
        (["--device-id", "operator"], "operator's broker account"),
        # written into runtime.toml as given: anything but HOST[:PORT] would break it
        (["--broker", "mqtt://a&b"], "expected mqtt://HOST[:PORT]"),
        (["--broker", "mqtt://h|x"], "expected mqtt://HOST[:PORT]"),
        (["--broker", 'mqtt://h"x'], "expected mqtt://HOST[:PORT]"),
        (["--broker", "mqtt://h x"], "expected mqtt://HOST[:PORT]"),
        (["--broker", "mqtt://h:99999"], "PORT 1..65535"),
        (["--broker", "mqtt://h/path"], "expected mqtt://HOST[:PORT]"),
        (["--serial-device", "ttyACM0"], "expected a /dev/ path"),
        (["--serial-device", "/dev/tty&x"], "expected a /dev/ path"),  # went into sed as &
        (["--serial-device", "/dev/tty|x"], "expected a /dev/ path"),
        (["--serial-device", "/dev/tty x"], "expected a /dev/ path"),
        (["--python", "/nonexistent/python3"], "not found"),
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path, args, message):
    prefix = tmp_path / "root"
    result = run_install("--prefix", prefix, "--skip-venv", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == "" and not prefix.exists()


def test_the_default_device_id_is_the_first_label_of_the_host_name(tmp_path, inputs):
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "hostname").write_text("#!/bin/sh\necho pi-07.lab.example\n")
    (shims / "hostname").chmod(0o755)
    args = full_args(tmp_path / "root", inputs)
    at = args.index("--device-id")
    del args[at : at + 2]
    run_install(*args, check=True, env={**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"})
    config = tomllib.loads((tmp_path / "root/etc/reinforce-edge/runtime.toml").read_text())
    assert config["device_id"] == config["username"] == "pi-07"


def test_cert_without_key_and_tls_without_mqtts_exit_2(tmp_path, inputs):
    prefix = tmp_path / "root"
    result = run_install("--prefix", prefix, "--cert", inputs["cert"])
    assert result.returncode == 2 and "--cert and --key go together" in result.stderr
    result = run_install("--prefix", prefix, "--ca-file", inputs["ca-file"])
    assert result.returncode == 2 and "need an mqtts://" in result.stderr


def test_python_older_than_3_10_exits_2(tmp_path):
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho 3.9\n")
    old.chmod(0o755)
    result = run_install("--prefix", tmp_path / "root", "--python", old)
    assert result.returncode == 2 and "Python >= 3.10 is needed" in result.stderr


def test_not_root_without_prefix_exits_2():
    # The script comes on stdin, so the plain user needs no access to the checkout.
    command = ["bash", "-s", "--", "--skip-venv"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: cannot drop to a plain user")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    with open(INSTALL, "rb") as script:
        result = subprocess.run(
            command, stdin=script, capture_output=True, text=True, timeout=30, cwd="/"
        )
    assert result.returncode == 2 and "run as root" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_are_shellcheck_clean():
    result = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_every_key_of_the_config_template_is_a_runtime_setting(tmp_path):
    from runtime.config import build_config, field_names

    text = (ROOT / "deploy/runtime.toml").read_text()
    # Every commented-out setting too: `#key = value` and install.sh's `#@group key = value`.
    uncommented = re.sub(r"(?m)^#(?:@\w+ )?([a-z_]+ = )", r"\1", text)
    uncommented = uncommented.replace("@BROKER@", "mqtts://broker.lan:8883")
    uncommented = uncommented.replace("@DEVICE_ID@", "pi-07")
    settings = tomllib.loads(uncommented)
    assert len(settings) >= 15 and set(settings) <= set(field_names())
    (tmp_path / "all.toml").write_text(uncommented)
    config = build_config({}, {}, tmp_path / "all.toml")  # every value is also valid
    assert config.broker == "mqtts://broker.lan:8883" and config.username == "pi-07"


def test_installed_config_is_accepted_by_the_runtime(tmp_path, inputs):
    from runtime.config import build_config

    prefix = tmp_path / "root"
    run_install(*full_args(prefix, inputs), check=True)
    config = build_config({}, {}, prefix / "etc/reinforce-edge/runtime.toml")
    assert config.device_id == "pi-07" and config.state_dir == "/var/lib/reinforce-edge"


def test_certificates_can_be_renewed_without_repeating_the_broker(tmp_path, inputs):
    prefix = tmp_path / "root"
    run_install(*full_args(prefix, inputs), check=True)
    inputs["cert"].write_bytes(b"-----BEGIN CERTIFICATE-----\nrenewed\n")
    result = run_install("--prefix", prefix, "--skip-venv", "--cert", inputs["cert"],
                         "--key", inputs["key"], check=True)  # fmt: skip
    assert "1 change(s)" in result.stdout
    assert (prefix / "etc/reinforce-edge/tls/device.crt").read_bytes().endswith(b"renewed\n")


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="systemd-sysusers/systemd-tmpfiles are not installed (apt-get install -y systemd)",
)
def test_an_image_staged_with_prefix_gets_its_user_and_owners_at_first_boot(tmp_path, inputs):
    """--prefix cannot chown; the target's systemd-sysusers and systemd-tmpfiles do it."""
    prefix = tmp_path / "image"
    run_install(*full_args(prefix, inputs), check=True)
    for tool, config in (("systemd-sysusers", "sysusers.d"), ("systemd-tmpfiles", "tmpfiles.d")):
        args = [tool, f"--root={prefix}", str(prefix / "etc" / config / "reinforce-edge.conf")]
        if tool == "systemd-tmpfiles":
            args.insert(1, "--create")
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    users = {
        line.split(":")[0]: line.split(":")
        for line in (prefix / "etc/passwd").read_text().splitlines()
    }
    uid, gid = int(users["reinforce-edge"][2]), int(users["reinforce-edge"][3])
    assert users["reinforce-edge"][6] == "/usr/sbin/nologin"
    etc = prefix / "etc/reinforce-edge"
    for path, mode in (
        (etc, 0o750),
        (etc / "runtime.toml", 0o640),
        (etc / "tls/device.key", 0o640),
    ):
        assert (path.stat().st_gid, path.stat().st_mode & 0o777) == (gid, mode), path
    state = prefix / "var/lib/reinforce-edge"
    assert (state.stat().st_uid, state.stat().st_gid) == (uid, gid)


@pytest.mark.parametrize("password", [b"\n", b"pass word\n", b'a"b\n', b"a\\b\n", b"a$b\n"])
def test_a_password_systemd_would_alter_is_refused_before_any_change(tmp_path, inputs, password):
    """mqtt.env is read by systemd's EnvironmentFile=, which trims, unquotes and unescapes."""
    inputs["password-file"].write_bytes(password)
    prefix = tmp_path / "root"
    result = run_install(*full_args(prefix, inputs))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--password-file" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not prefix.exists(), installed_files(prefix)
