"""Run a command inside the system-call sandbox that a systemd unit declares (a test helper).

    python3 unit_sandbox.py UNIT_FILE COMMAND [ARG...]

Reads from the unit: `SystemCallFilter=` (allow lists and `~` deny lists; systemd's @groups are
expanded with `systemd-analyze syscall-filter`, so the sets are the installed systemd's own),
`SystemCallErrorNumber=`, `RestrictAddressFamilies=`, `NoNewPrivileges=` and
`MemoryDenyWriteExecute=` (PR_SET_MDWE, Linux >= 6.3), applies them to this process with
libseccomp (Debian: python3-seccomp) and execs COMMAND, which inherits them. Systemd itself is
not needed, so the runtime can be tried under its unit's filter on any Linux test machine.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys

import seccomp

PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def unit_settings(path: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as unit:
        for line in unit:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, value = line.split("=", 1)
                settings.setdefault(key, []).append(value)
    return settings


def expand(name: str, seen: set[str]) -> set[str]:
    """System call names of `name` (a call, or an @group expanded recursively)."""
    if not name.startswith("@"):
        return {name}
    seen.add(name)
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout
    calls: set[str] = set()
    for line in listing.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#") and item not in seen:
            calls |= expand(item, seen)
    return calls


def allowed_calls(filters: list[str]) -> set[str]:
    """systemd's semantics: the first allow list sets the base, `~` lists subtract."""
    allowed: set[str] | None = None
    for value in filters:
        deny = value.startswith("~")
        names: set[str] = set()
        for word in value.lstrip("~").split():
            names |= expand(word, set())
        if deny:
            allowed = (allowed if allowed is not None else set()) - names
        else:
            allowed = (allowed or set()) | names
    return allowed or set()


def main(argv: list[str]) -> int:
    unit, command = argv[0], argv[1:]
    settings = unit_settings(unit)
    error = getattr(errno, settings.get("SystemCallErrorNumber", ["EPERM"])[-1])
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(error))
    calls = allowed_calls(settings.get("SystemCallFilter", []))
    families = [
        getattr(socket, f) for f in " ".join(settings.get("RestrictAddressFamilies", [])).split()
    ]
    added = 0
    for call in sorted(calls):
        try:
            if call == "socket" and families:
                for family in families:  # socket(2) only for the allowed families
                    rules.add_rule(seccomp.ALLOW, call, seccomp.Arg(0, seccomp.EQ, family))
            else:
                rules.add_rule(seccomp.ALLOW, call)
            added += 1
        except (RuntimeError, ValueError, OSError):
            pass  # not a system call on this architecture
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    wx = "no W^X (not asked)"
    if settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        ok = libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0
        wx = "W^X enforced" if ok else "W^X not available on this kernel"
    rules.load()
    print(
        f"unit sandbox: {added} system calls allowed, others fail with"
        f" {errno.errorcode[error]}; socket families {len(families)}; {wx}",
        file=sys.stderr,
        flush=True,
    )
    os.execvp(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
