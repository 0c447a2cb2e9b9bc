"""systemd service notifications (sd_notify) with the standard library's `socket` alone.

When systemd starts the runtime with `Type=notify`, it sets `NOTIFY_SOCKET` (a path, or an
abstract socket name starting with `@`) and, with `WatchdogSec=`, `WATCHDOG_USEC`. We send
`READY=1` after the first decision, `WATCHDOG=1` every `WATCHDOG_USEC / 2` from the control
loop itself (a stuck loop stops feeding the watchdog and gets restarted), `STATUS=...` after
each episode and `STOPPING=1` on the way out. Sending never blocks and never raises: a lost
notification is logged once, the controller keeps running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

MIN_WATCHDOG_INTERVAL_US = 1000  # feed at most 1000 times a second, whatever WATCHDOG_USEC says


class Notifier:
    """Sends datagrams to systemd's notification socket."""

    def __init__(self, address: str, watchdog_usec: int = 0) -> None:
        # "@name" is Linux's abstract namespace: a leading NUL byte on the wire
        self.address = "\0" + address[1:] if address.startswith("@") else address
        # systemd advises half the limit; never more often than every MIN_WATCHDOG_INTERVAL_US
        # (a WATCHDOG_USEC of 1 made every wait a busy loop of sendto() calls)
        half_ns = watchdog_usec * 1000 // 2
        self.watchdog_interval_ns = max(half_ns, MIN_WATCHDOG_INTERVAL_US * 1000) if half_ns else 0
        import socket  # only under systemd: a plain run does not load it

        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """A Notifier when `NOTIFY_SOCKET` is set, else None."""
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        watchdog_usec = 0
        pid = environ.get("WATCHDOG_PID")
        text = environ.get("WATCHDOG_USEC", "")
        if text and (not pid or pid == str(os.getpid())):  # the watchdog is ours, not a parent's
            try:
                watchdog_usec = int(text)
            except ValueError:
                watchdog_usec = -1
            if watchdog_usec <= 0:
                log.warning("ignoring WATCHDOG_USEC=%r: not a positive integer", text)
                watchdog_usec = 0
            elif watchdog_usec < 2 * MIN_WATCHDOG_INTERVAL_US:
                log.warning(
                    "WATCHDOG_USEC=%d is below %d: feeding the watchdog every %d us",
                    watchdog_usec,
                    2 * MIN_WATCHDOG_INTERVAL_US,
                    MIN_WATCHDOG_INTERVAL_US,
                )
        return cls(address, watchdog_usec)

    def send(self, *lines: str) -> bool:
        message = "\n".join(lines).encode("utf-8")
        try:
            self.socket.sendto(message, self.address)
            return True
        except OSError as error:
            if not self._failed:
                log.warning("sd_notify to %r failed: %s", self.address.lstrip("\0"), error)
                self._failed = True
            return False

    def ready(self, status: str = "running") -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def on_episode(self, result) -> None:  # an episode listener: keep `systemctl status` current
        self.status(
            f"episode {result.episode}: return {result.episode_return:g},"
            f" policy v{result.policy_version}, decision p99 {result.decision_us_p99} us,"
            f" {result.overruns} overruns"
        )

    def close(self) -> None:
        self.socket.close()
