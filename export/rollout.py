"""`python -m export rollout`: a policy to a fleet in waves, stopping when a wave goes wrong.

    python -m export rollout dist/policy.npz --broker mqtt://host --devices fleet.txt \
        --waves 5%,25%,100% --abort-above 10% [--wave-timeout 300] [--min-devices 5]
    python -m export rollout dist/policy.npz --broker mqtt://host --all-online ... \
        --undo --previous dist-old/policy.npz --sign-key keys/signing.key

The devices (one id per line in `--devices FILE`, or every device whose retained status says
online) are sorted by id and cut into waves by cumulative percentages: 5%,25%,100% sends to
the first 5%, then up to 25%, then to everyone. Each wave publishes the file to each of its
devices' own topic (a device still offline is sent to when its status comes online) and waits
for every one of them: a device has succeeded when its status runs the file (by sha256) and
its health check (`probation`) passed, or was skipped because it has nothing to judge by;
failed when it rejected the file, rolled it back, or did not get there within
`--wave-timeout` seconds. When more than `--abort-above` of a wave's results (once it has at
least `--min-devices` of them, or all when the wave is smaller) are failures, the rollout
stops: nothing more is sent, and with `--undo` the devices it updated get the previous policy
back, re-signed at a version above the aborted one (anti-rollback stays strict on the
devices: the old file itself, and the aborted one, are still refused).

Everything is recorded in a state file (`--state`, default `rollout-<sha12>.json` in the
current directory), written atomically: a device is recorded as sent before it is sent, so a
run that is interrupted (Ctrl-C, a crash) is continued by the same command, which never sends
a device the file twice and counts each device once. A broker that goes away pauses the
rollout (nothing is sent, the wave clock stops) until the connection is back.

Exit status: 0 every device succeeded, 1 aborted or some failed (or no broker), 2 bad input,
130 interrupted (the state is saved).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from export.push import Parser as PushParser
from export.push import (
    StatusBoard,
    UsageError,
    _prefix,
    _run,
    _settings,
    format_table,
    read_policy,
)
from export.waves import (
    FAILED,
    SUCCEEDED,
    Plan,
    State,
    StateNotSaved,
    Undo,
    crossed,
    judge,
    load_state,
    locked,
    parse_percent,
    parse_waves,
    read_device_file,
    refuse_unknown,
)
from runtime.constants import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    TOPIC_DEVICE_POLICY,
)
from runtime.mqtt import BrokerSettings, add_broker_arguments
from runtime.policy import Policy

logger = logging.getLogger(__name__)

SAVE_EVERY_S = 0.2  # results are saved at most this often (a send is saved before it goes out)
RESUBSCRIBE_AFTER_S = 5.0  # no news this long: ask the broker for every retained status again
TICK_S = 0.5
SHOWN_FAILURES = 20  # failed devices listed under the table


# --- running it ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UndoSpec:
    """How to take the aborted policy back off: the previous policy and the key to re-sign it."""

    previous: Policy
    private_key: Any


class Rollout:
    """Sends wave by wave and judges each device by its status; `run` returns the exit code."""

    def __init__(
        self,
        state: State,
        data: bytes,
        board: StatusBoard,
        prefix: str,
        state_path: Path,
        *,
        undo: UndoSpec | None = None,
        progress: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.state = state
        self.data = data
        self.board = board
        self.prefix = prefix
        self.state_path = state_path
        self.undo_spec = undo
        self.progress = progress or (lambda text, final: None)
        self.waves = state.plan.members()
        self.dirty: set[str] = set()
        self.watching: set[str] = set()
        self._saved_at = 0.0
        self.sends: list[Any] = []  # paho's MessageInfo of every publish, for `flush`
        board.listen(self._on_status)

    def _on_status(self, device: str, body: dict[str, Any], retained: bool) -> None:
        if device in self.watching:  # under board.changed, in the network thread
            self.dirty.add(device)

    def run(self) -> int:
        state = self.state
        while state.phase == "rolling":
            self._run_wave(state.wave)
            if state.phase == "rolling":
                if state.wave + 1 == len(self.waves):
                    state.phase = "completed"
                else:
                    state.wave, state.waited = state.wave + 1, 0.0
                self.save()
        if state.phase == "aborted" and self.undo_spec is not None:
            self._run_undo()
        failed = any(r["result"] == FAILED for r in state.results.values())
        return EXIT_OK if state.phase == "completed" and not failed else EXIT_FAILURE

    # -- one wave --

    def _run_wave(self, index: int) -> None:
        members = self.waves[index]
        state = self.state
        with self.board.changed:
            self.watching = set(members)
            self.dirty = set(members)
        waves = len(self.waves)
        self.progress(f"wave {index + 1}/{waves}: {len(members)} devices", False)
        last = time.monotonic()
        quiet_since = last
        while True:
            connected, changed, statuses, now = self._take_news(last)
            if connected:
                state.waited += now - last
            last = now
            to_send = self._settle(changed, statuses, index) if changed else []
            if to_send:
                self._send(to_send, index)
            counts = self.counts(index)
            self.progress(self._progress_line(index, counts, connected), False)
            if self._check_abort(index, counts):
                break
            if counts["pending"] == 0:
                self.save()
                self.progress(self._progress_line(index, counts, connected), True)
                break
            if state.waited >= state.plan.wave_timeout:
                self._time_out(members, index)
                continue  # the timed-out devices may cross the threshold
            if changed:
                quiet_since = now
            elif connected and now - quiet_since >= RESUBSCRIBE_AFTER_S:
                self.board.resubscribe()  # a status lost at QoS 0 comes back
                quiet_since = now
            self.save(throttled=True)
            self._wait(state.plan.wave_timeout - state.waited)

    def _take_news(
        self, last: float
    ) -> tuple[bool, set[str], dict[str, dict[str, Any] | None], float]:
        """(connected, devices whose status changed, their statuses, now). While the broker
        is away nothing is taken: the statuses come in again on reconnect."""
        with self.board.changed:
            connected = self.board.connected.is_set()
            changed: set[str] = set()
            if connected:
                changed, self.dirty = self.dirty, set()
            statuses = {d: self.board.status.get(d) for d in changed}
        return connected, changed, statuses, time.monotonic()

    def _wait(self, remaining: float) -> None:
        with self.board.changed:
            if not self.dirty or not self.board.connected.is_set():
                self.board.changed.wait(max(0.01, min(TICK_S, remaining)))

    def _settle(
        self, changed: set[str], statuses: dict[str, dict[str, Any] | None], index: int
    ) -> list[str]:
        """Record the devices these statuses settle; the ones to send to now (online, unsent)."""
        state = self.state
        to_send = []
        for device in sorted(changed):
            if device in state.results:
                continue  # counted once, whatever it says later
            body = statuses.get(device)
            sent = device in state.sent
            verdict = judge(body, state.policy_sha256, state.policy_version, sent)
            if verdict is not None:
                result, reason = verdict
                state.results[device] = {"result": result, "reason": reason, "wave": index}
            elif not sent and body is not None and body.get("state") == "online":
                to_send.append(device)
        return to_send

    def _send(self, devices: list[str], index: int) -> None:
        """Record, then publish: a crash in between loses a push, never repeats one."""
        for device in devices:
            self.state.sent[device] = index
        self.save()
        self._publish(devices, self.data)

    def _publish(self, devices: list[str], data: bytes) -> None:
        for device in devices:
            topic = TOPIC_DEVICE_POLICY.format(prefix=self.prefix, device_id=device)
            self.sends.append(self.board.client.publish(topic, data, qos=1))

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until the broker has every push (a disconnect would drop what is queued)."""
        deadline = time.monotonic() + timeout
        for info in self.sends:
            with contextlib.suppress(RuntimeError, ValueError):  # not connected, queue full
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))

    def _time_out(self, members: list[str], index: int) -> None:
        timeout = self.state.plan.wave_timeout
        for device in members:
            if device in self.state.results:
                continue
            body = self.board.status.get(device) or {}
            if device not in self.state.sent:
                why = f"not sent: not online within {timeout:g} s"
            else:
                why = f"no result within {timeout:g} s" + (
                    " (device offline)" if body.get("state") == "offline" else ""
                )
            self.state.results[device] = {"result": FAILED, "reason": why, "wave": index}
        self.save()

    def _check_abort(self, index: int, counts: dict[str, int]) -> bool:
        results = counts["succeeded"] + counts["failed"]
        if not crossed(counts["failed"], results, counts["devices"], self.state.plan):
            return False
        self.state.phase = "aborted"
        self.state.abort = {
            "wave": index,
            "failed": counts["failed"],
            "results": results,
            "reason": (
                f"{counts['failed']} of {results} results in wave {index + 1} failed, more than"
                f" {self.state.plan.abort_above:g}%"
            ),
        }
        self.save()
        self.progress(f"aborted: {self.state.abort['reason']}; nothing more is sent", True)
        return True

    # -- undo --

    def _run_undo(self) -> None:
        """The previous policy, re-signed above the aborted version, to the updated devices."""
        state, spec = self.state, self.undo_spec
        assert spec is not None
        if state.undo is None:
            with self.board.changed:
                statuses = dict(self.board.status)
            targets = undo_targets(state, statuses)
            newest = max(
                [state.policy_version, spec.previous.version]
                + [int(s.get("policy_version") or 0) for s in statuses.values()]
            )
            undo_policy = resign(spec, newest + 1)
            state.undo = Undo(undo_policy.sha256, undo_policy.version, targets)
            self.save()
        else:  # continued: the same --previous and --sign-key make the same bytes (Ed25519)
            undo_policy = resign(spec, state.undo.version)
        undo = state.undo
        if undo_policy.sha256 != undo.sha256:
            raise UsageError(
                "--previous/--sign-key make another policy than the undo this state began;"
                " give the same ones"
            )
        if undo.done:
            return
        self._wait_undo(undo, undo_policy)
        undo.done = True
        self.save()

    def _wait_undo(self, undo: Undo, policy: Policy) -> None:
        with self.board.changed:
            self.watching = set(undo.targets)
            self.dirty = set(undo.targets)
        self.progress(f"undo: version {undo.version} to {len(undo.targets)} devices", False)
        last = time.monotonic()
        while True:
            connected, changed, statuses, now = self._take_news(last)
            undo.waited += (now - last) if connected else 0.0
            last = now
            to_send = []
            for device in sorted(changed):
                if device in undo.results:
                    continue
                verdict = undo_verdict(
                    statuses.get(device), undo, device in undo.sent, self.state.policy_sha256
                )
                if verdict is not None:
                    undo.results[device] = {"result": verdict[0], "reason": verdict[1]}
                elif (
                    device not in undo.sent
                    and (statuses.get(device) or {}).get("state") == "online"
                ):
                    to_send.append(device)
            if to_send:
                undo.sent.extend(to_send)
                self.save()
                self._publish(to_send, policy.data)
            pending = [d for d in undo.targets if d not in undo.results]
            self.progress(
                f"undo: {len(undo.sent)}/{len(undo.targets)} sent, {len(undo.targets) - len(pending)} answered",
                not pending,
            )
            if not pending:
                return
            if undo.waited >= self.state.plan.wave_timeout:
                for device in pending:
                    why = f"no answer within {self.state.plan.wave_timeout:g} s"
                    undo.results[device] = {"result": FAILED, "reason": why}
                return
            self.save(throttled=True)
            self._wait(self.state.plan.wave_timeout - undo.waited)

    # -- bookkeeping --

    def counts(self, index: int) -> dict[str, int]:
        return wave_counts(self.state, self.waves[index])

    def _progress_line(self, index: int, counts: dict[str, int], connected: bool) -> str:
        done = counts["devices"] - counts["pending"]
        width = 20
        filled = width * done // max(1, counts["devices"])
        bar = "#" * filled + "-" * (width - filled)
        pause = "  broker unreachable: paused" if not connected else ""
        return (
            f"wave {index + 1}/{len(self.waves)} [{bar}] {counts['sent']} sent,"
            f" {counts['succeeded']} succeeded, {counts['failed']} failed,"
            f" {counts['pending']} pending{pause}"
        )

    def save(self, throttled: bool = False) -> None:
        now = time.monotonic()
        if throttled and now - self._saved_at < SAVE_EVERY_S:
            return
        self.state.save(self.state_path)
        self._saved_at = now


def wave_counts(state: State, members: list[str]) -> dict[str, int]:
    """A wave's devices, how many were sent the file, succeeded, failed, and are pending."""
    results = [state.results.get(d) for d in members]
    failed = sum(1 for r in results if r is not None and r["result"] == FAILED)
    done = sum(1 for r in results if r is not None)
    return {
        "devices": len(members),
        "sent": sum(1 for d in members if d in state.sent),
        "succeeded": done - failed,
        "failed": failed,
        "pending": len(members) - done,
    }


def undo_targets(state: State, statuses: dict[str, dict[str, Any]]) -> list[str]:
    """The devices the aborted rollout sent to, but those that rejected it or went back on
    their own (they run the previous policy already), as they said then or say now."""
    targets = []
    for device in sorted(state.sent):
        reason = (state.results.get(device) or {}).get("reason", "")
        now = judge(statuses.get(device), state.policy_sha256, state.policy_version, sent=True)
        if reason.startswith(("rejected", "rolled_back")) or (now and now[0] == FAILED):
            continue
        targets.append(device)
    return targets


def undo_verdict(
    body: dict[str, Any] | None, undo: Undo, sent: bool, aborted_sha256: str
) -> tuple[str, str] | None:
    """Succeeded once the device runs the undo, or refused it while it does not run the
    aborted file either (it rejected that too, or went back on its own); failed when it refused
    the undo and still runs the aborted file."""
    if body is None:
        return None
    if body.get("policy_sha256") == undo.sha256:
        return SUCCEEDED, "" if sent else "already running it"
    last = body.get("last_update") or {}
    if sent and last.get("sha256") == undo.sha256 and last.get("result") == "rejected":
        why = last.get("reason") or "-"
        if body.get("policy_sha256") != aborted_sha256:
            return SUCCEEDED, f"not on the aborted version; it refused the undo too: {why}"
        return FAILED, f"rejected: {why}"
    return None


def resign(spec: UndoSpec, version: int) -> Policy:
    """The previous policy's weights and meta at `version`, signed (deterministic: Ed25519)."""
    from export.build import exported_policy

    return exported_policy(spec.previous, version, spec.private_key)


# --- output -----------------------------------------------------------------------------------


def report_json(state: State, path: str, code: int) -> dict[str, Any]:
    members = state.plan.members()
    waves = []
    for index, devices in enumerate(members):
        counts = wave_counts(state, devices)
        if index > state.wave:  # pending: waiting for an answer; a wave not begun has none
            counts["pending"] = 0
        waves.append({"wave": index + 1, "percent": state.plan.waves[index], **counts})
    undo = None
    if state.undo is not None:
        u = state.undo
        failed = sum(1 for r in u.results.values() if r["result"] == FAILED)
        undo = {
            "version": u.version,
            "sha256": u.sha256,
            "devices": len(u.targets),
            "sent": len(u.sent),
            "succeeded": len(u.results) - failed,
            "failed": failed,
            "pending": len(u.targets) - len(u.results),
            "results": u.results,
        }
    if code == EXIT_INTERRUPTED:
        outcome = "interrupted"
    elif state.phase == "aborted":
        outcome = "aborted"
    else:
        outcome = "completed" if code == EXIT_OK else "completed with failures"
    return {
        "policy": path,
        "version": state.policy_version,
        "sha256": state.policy_sha256,
        "outcome": outcome,
        "exit": code,
        "abort": state.abort,
        "waves": waves,
        "undo": undo,
        "results": {d: state.results[d] for d in sorted(state.results)},
    }


def report_text(report: dict[str, Any]) -> str:
    lines = [
        f"rollout of {report['policy']} version {report['version']} sha256"
        f" {report['sha256'][:12]}...: {report['outcome']}"
        + (f" ({report['abort']['reason']})" if report["abort"] else "")
    ]
    header = ("wave", "percent", "devices", "sent", "succeeded", "failed", "pending")
    rows = [
        (str(w["wave"]), f"{w['percent']:g}%", *(str(w[k]) for k in header[2:]))
        for w in report["waves"]
    ]
    if report["undo"]:
        u = report["undo"]
        rows.append(("undo", f"v{u['version']}", *(str(u[k]) for k in header[2:])))
    lines.append(format_table(header, rows))
    failures = [(d, r) for d, r in report["results"].items() if r["result"] == FAILED]
    for device, result in failures[:SHOWN_FAILURES]:
        lines.append(f"failed: {device} (wave {result['wave'] + 1}): {result['reason']}")
    if len(failures) > SHOWN_FAILURES:
        lines.append(f"... and {len(failures) - SHOWN_FAILURES} more failed (see --json)")
    return "\n".join(lines)


class Progress:
    """One line on stderr: redrawn in place on a terminal; elsewhere (a log) printed at each
    wave's start and end, and when the broker goes away or comes back."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._drawn_at = 0.0
        self._paused = False

    def __call__(self, text: str, final: bool) -> None:
        now = time.monotonic()
        paused = text.endswith("paused")
        if self.tty:
            if final or paused != self._paused or now - self._drawn_at >= 0.1:
                self.stream.write(f"\r\x1b[K{text}{chr(10) if final else ''}")
                self.stream.flush()
                self._drawn_at = now
        elif final or text.endswith(" devices") or paused != self._paused:
            self.stream.write(text + "\n")
            self.stream.flush()
        self._paused = paused


# --- command line -------------------------------------------------------------------------------


def build_parser(prog: str = "python -m export rollout") -> PushParser:
    parser = PushParser(
        prog=prog,
        description="Roll a signed policy.npz out to devices in waves over MQTT, stopping (and"
        " optionally undoing) when too many devices of a wave fail.",
    )
    parser.add_argument("file", help="policy.npz to roll out (as `python -m export` wrote it)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--devices", metavar="FILE", help="device ids, one a line (# comments)")
    target.add_argument(
        "--all-online", action="store_true", help="every device whose status says online"
    )
    parser.add_argument(
        "--waves",
        required=True,
        metavar="P%,...",
        help="cumulative percentages of the devices, ending at 100%% (e.g. 5%%,25%%,100%%)",
    )
    parser.add_argument(
        "--abort-above",
        required=True,
        metavar="P%",
        help="stop when more than this share of a wave's results failed (e.g. 10%%)",
    )
    parser.add_argument(
        "--wave-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds a wave waits (while connected) before its pending devices count failed",
    )
    parser.add_argument(
        "--min-devices",
        type=int,
        default=5,
        metavar="N",
        help="results a wave needs before it can abort (all of them in a smaller wave)",
    )
    parser.add_argument(
        "--state",
        metavar="FILE",
        help="the rollout's state, to continue it (default rollout-<sha12>.json here)",
    )
    parser.add_argument(
        "--undo",
        action="store_true",
        help="when aborted, give the updated devices --previous back (re-signed, newer version)",
    )
    parser.add_argument("--previous", metavar="POLICY", help="the policy the devices ran before")
    parser.add_argument("--sign-key", metavar="KEY", help="private key to re-sign --previous")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds to wait for the broker"
    )
    add_broker_arguments(parser, required=True)
    return parser


@dataclass(frozen=True)
class Request:
    """The checked command line."""

    path: Path
    data: bytes
    policy: Policy
    settings: BrokerSettings
    prefix: str
    state_path: Path
    waves: tuple[float, ...]
    abort_above: float
    min_devices: int
    wave_timeout: float
    devices: tuple[str, ...] | None  # None: --all-online
    undo: UndoSpec | None
    connect_timeout: float
    json: bool


def checked_request(args: argparse.Namespace) -> Request:
    """Every flag and file checked before the broker is contacted; UsageError otherwise."""
    try:
        waves = parse_waves(args.waves)
        abort_above = parse_percent(args.abort_above, "--abort-above")
        Plan(("x",), waves, abort_above, args.min_devices, args.wave_timeout)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not 0 < args.connect_timeout <= 3600:
        raise UsageError(f"--connect-timeout must be in (0, 3600] s, got {args.connect_timeout}")
    settings, prefix = _settings(args), _prefix(args)
    path = Path(args.file)
    data, policy = read_policy(path, "policy")
    devices = None if args.all_online else tuple(read_device_file(Path(args.devices)))
    if devices is not None and not devices:
        raise UsageError(f"--devices {args.devices}: lists no device ids")
    undo = checked_undo(args)
    state_path = Path(args.state) if args.state else Path(f"rollout-{policy.sha256[:12]}.json")
    return Request(
        path,
        data,
        policy,
        settings,
        prefix,
        state_path,
        waves,
        abort_above,
        args.min_devices,
        args.wave_timeout,
        devices,
        undo,
        args.connect_timeout,
        args.json,
    )


def checked_undo(args: argparse.Namespace) -> UndoSpec | None:
    if not args.undo:
        if args.previous or args.sign_key:
            raise UsageError("--previous and --sign-key are for --undo")
        return None
    if not (args.previous and args.sign_key):
        raise UsageError("--undo needs --previous POLICY and --sign-key KEY")
    from export.console import InputError
    from export.keys import load_private_key

    _, previous = read_policy(Path(args.previous), "--previous")
    try:
        key = load_private_key(args.sign_key)
    except InputError as error:
        raise UsageError(f"--sign-key: {error}") from None
    return UndoSpec(previous, key)


def existing_state(request: Request) -> State | None:
    """The state to continue (checked against the request), or None for a new rollout."""
    if not request.state_path.exists() and not request.state_path.is_symlink():
        return None
    state = load_state(request.state_path)
    check_resumable(state, request)
    return state


def new_state(request: Request, known: dict[str, dict[str, Any]]) -> State:
    """A new state from the request and the retained statuses (`known`)."""
    policy = request.policy
    if request.devices is None:
        devices = tuple(sorted(d for d, s in known.items() if s.get("state") == "online"))
        if not devices:
            raise UsageError("--all-online: no device's status says online")
    else:
        refuse_unknown(request.devices, known)
        devices = request.devices
    plan = Plan(
        devices, request.waves, request.abort_above, request.min_devices, request.wave_timeout
    )
    return State(policy.sha256, policy.version, plan)


def check_resumable(state: State, request: Request) -> None:
    """A state continues only the rollout it began: the same file and the same plan."""
    where = f"--state {request.state_path}"
    if state.policy_sha256 != request.policy.sha256:
        raise UsageError(
            f"{where} is the rollout of another file (sha256 {state.policy_sha256[:12]}...,"
            f" this is {request.policy.sha256[:12]}...): give its --state or another one"
        )
    plan = state.plan
    given = (request.waves, request.abort_above, request.min_devices, request.wave_timeout)
    if given != (plan.waves, plan.abort_above, plan.min_devices, plan.wave_timeout):
        raise UsageError(
            f"{where} began with other --waves/--abort-above/--min-devices/--wave-timeout;"
            " continue with the same ones"
        )
    if request.devices is not None and request.devices != plan.devices:
        raise UsageError(f"{where} began with another device list; continue with the same one")


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        request = checked_request(args)
        if request.policy.signature is None:
            logger.warning("%s is unsigned: devices with a public key will reject it", request.path)
        try:
            return run_request(request, Progress(sys.stderr))
        except StateNotSaved as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILURE

    return _run(body)


def run_request(request: Request, progress: Callable[[str, bool], None]) -> int:
    """Connect, build or load the state, roll out, print the report; the exit code."""
    with locked(request.state_path):
        resumed = existing_state(request)  # bad or foreign: refused before connecting
        board = StatusBoard(
            request.settings, request.prefix, request.connect_timeout, reconnect_max_s=2
        )
        board.client.max_queued_messages_set(0)  # a wave's pushes wait for the socket, all
        board.open()
        code = EXIT_INTERRUPTED
        state: State | None = None
        rollout: Rollout | None = None
        try:
            with board.changed:
                known = dict(board.status)
            state = resumed or new_state(request, known)
            state.save(request.state_path)
            rollout = Rollout(
                state,
                request.data,
                board,
                request.prefix,
                request.state_path,
                undo=request.undo,
                progress=progress,
            )
            code = rollout.run()
        except KeyboardInterrupt:
            if state is not None:
                state.save(request.state_path)
                print(
                    f"interrupted: the state is saved in {request.state_path}; the same command"
                    " continues the rollout",
                    file=sys.stderr,
                )
            raise
        finally:
            if rollout is not None:
                rollout.flush()
            board.close()
    report = report_json(state, str(request.path), code)
    print(json.dumps(report, indent=1) if request.json else report_text(report))
    return code
