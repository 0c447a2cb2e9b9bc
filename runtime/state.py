"""Crash-safe persistence of the device's policies in its state directory.

    STATE_DIR/current.npz    the policy running now (the last applied update)
    STATE_DIR/previous.npz   the one it replaced: the health rollback target
    STATE_DIR/state.json     {"highest_version": N, "refused_versions": [...]}
    STATE_DIR/keys.json      the trusted key set applied last (runtime/keyset.py), if any

Every write is atomic (temporary file, fsync, `os.replace`, fsync of the directory), so a power
cut at any instant leaves both files valid. Applying an update first turns the old `current.npz`
into `previous.npz` with a hard link and a rename (no data copied), then writes the new
`current.npz`; the rename of `current.npz` is the commit point. The highest accepted version is
the largest of the versions in both files and `state.json` (rewritten after each update that
raises it, and on rollback), so anti-rollback survives restarts and a damaged current.npz.
A directory where one of the files belongs is moved aside at start (it could never be replaced).
keys.json, once written, overrides the configured keys; a damaged one stops the start (ValueError)
instead of falling back to configured keys that may have been revoked since.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.constants import (
    DEFAULT_MAX_POLICY_BYTES,
    DEFAULT_STATE_DIR,
    MAX_REFUSED_VERSIONS,
    OBS_DIM,
    STATE_CURRENT_FILE,
    STATE_FILE,
    STATE_KEYS_FILE,
    STATE_PREVIOUS_FILE,
    USER_STATE_SUBDIR,
)
from runtime.policy import Policy, PolicyError, atomic_write, parse_policy

logger = logging.getLogger(__name__)


def default_state_dir() -> Path:
    """/var/lib/reinforce-edge when this user may write there, else the user's state dir."""
    system = Path(DEFAULT_STATE_DIR)
    if os.access(system, os.W_OK) or (not system.exists() and os.access(system.parent, os.W_OK)):
        return system
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / USER_STATE_SUBDIR


@dataclass(frozen=True)
class Stored:
    """A validated policy and the exact bytes it was read from."""

    policy: Policy
    data: bytes


class StateStore:
    """The state directory: load what survived, commit updates, roll back, remember refusals."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        obs_dim: int = OBS_DIM,
        max_bytes: int = DEFAULT_MAX_POLICY_BYTES,
        public_key: Any = None,
        space: Any = None,
    ) -> None:
        """`space`: the plant's `runtime.spaces.PlantSpace`; a persisted policy that does not
        fit it is ignored (None: only `obs_dim` is checked). `public_key`: an Ed25519 public
        key or a `runtime.keyset.KeySet`; a persisted keys.json replaces it at `load()`."""
        self.directory = Path(directory)
        self.space = space
        self.obs_dim = obs_dim
        self.max_bytes = max_bytes
        self.public_key = public_key
        self.current: Stored | None = None
        self.previous: Stored | None = None
        self.highest_version = 0
        self._persisted_highest = 0  # highest_version as state.json holds it
        self.refused: set[int] = set()

    @property
    def current_path(self) -> Path:
        return self.directory / STATE_CURRENT_FILE

    @property
    def previous_path(self) -> Path:
        return self.directory / STATE_PREVIOUS_FILE

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def keys_path(self) -> Path:
        return self.directory / STATE_KEYS_FILE

    # --- start-up ---------------------------------------------------------------

    def load(self) -> None:
        """Read the directory (creating it), keep only valid files, drop stale temporaries."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as error:
            raise ValueError(
                f"state directory {self.directory}: cannot create: {error.strerror or error}"
            ) from None
        if not os.access(self.directory, os.W_OK):
            raise ValueError(f"state directory {self.directory}: not writable")
        for stale in self.directory.glob(".*.tmp"):  # left by a power cut mid-write
            if stale.is_file() or stale.is_symlink():  # never a directory someone put there
                stale.unlink(missing_ok=True)
        for path in (self.current_path, self.previous_path, self.state_path):
            self._move_aside_if_not_a_file(path)
        self._read_state_file()
        self._read_keyset()  # before the policies: they are checked against it
        self.current = self._read_policy(self.current_path)
        self.previous = self._read_policy(self.previous_path)
        for stored in (self.current, self.previous):
            if stored is not None:
                self.highest_version = max(self.highest_version, stored.policy.version)

    def _move_aside_if_not_a_file(self, path: Path) -> None:
        """A directory (or fifo, socket) where a file belongs could never be replaced by the
        atomic writes: rename it aside, so the runtime starts and can persist again."""
        if not os.path.lexists(path) or path.is_symlink() or path.is_file():
            return
        aside = path.with_name(f"{path.name}.unusable-{int(time.time())}")
        os.replace(path, aside)
        logger.warning("%s is not a regular file: moved it aside to %s", path, aside.name)

    def _read_keyset(self) -> None:
        from runtime.keyset import read_keyset_state

        persisted = read_keyset_state(self.keys_path)  # ValueError when damaged: no start
        if persisted is not None:
            self.public_key = persisted
            logger.info(
                "trusting key set version %d from %s: keys %s",
                persisted.version,
                self.keys_path,
                ", ".join(persisted.ids),
            )

    def commit_keyset(self, keyset: Any) -> None:
        """Persist an applied key set (atomic), then trust it."""
        from runtime.keyset import keyset_state_bytes

        atomic_write(self.keys_path, keyset_state_bytes(keyset))
        self.public_key = keyset

    def _read_state_file(self) -> None:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            highest = state["highest_version"]
            refused = state["refused_versions"]
            if not _is_int(highest) or not isinstance(refused, list):
                raise ValueError("highest_version must be an integer, refused_versions a list")
            if not all(_is_int(version) for version in refused):
                raise ValueError("refused versions must be integers")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("%s is unreadable, ignoring it: %s", self.state_path, error)
            return
        self.highest_version = max(self.highest_version, highest)
        self._persisted_highest = highest
        self.refused.update(refused)

    def _read_policy(self, path: Path) -> Stored | None:
        if not path.exists():
            return None
        try:
            data = path.read_bytes()
            policy = parse_policy(data, max_bytes=self.max_bytes, obs_dim=self.obs_dim)
            if self.space is not None:
                from runtime.spaces import check_fits

                check_fits(policy, self.space)  # a SpaceMismatch is a PolicyError
            if self.public_key is not None:
                from runtime.signing import verify_policy

                verify_policy(policy, self.public_key)
        except (OSError, PolicyError) as error:
            logger.warning("ignoring persisted policy %s: %s", path, error)
            return None
        except Exception as error:  # noqa: BLE001 - whatever a damaged file trips the parser on
            logger.warning(
                "ignoring persisted policy %s: %s: %s", path, type(error).__name__, error
            )
            return None
        return Stored(policy, data)

    def newest(self, given: Stored) -> Stored:
        """`given`, or the newest valid persisted policy not rolled back when it is newer."""
        best = given
        for stored in (self.current, self.previous):
            if (
                stored is not None
                and stored.policy.version not in self.refused
                and stored.policy.version > best.policy.version
            ):
                best = stored
        return best

    def startup_choice(self, given: Stored) -> Stored:
        """The policy to run: the newest valid persisted one when newer than `given`.

        A persisted version that was rolled back (a power cut in the middle of the rollback)
        is skipped. The choice is then recorded as current.npz, so the state directory always
        mirrors what runs and a later rollback returns to it.
        """
        best = self.newest(given)
        if self.current is None or self.current.policy.sha256 != best.policy.sha256:
            if self.current is not None and self.current.policy.version in self.refused:
                atomic_write(self.current_path, best.data)  # never keep a refused one as previous
                self.current = best
            else:
                self.commit(best)
        self.highest_version = max(self.highest_version, best.policy.version)
        try:  # only a backup of what the files hold: a full disk must not stop the start
            self.save_highest()
        except OSError as error:
            logger.warning("cannot record the highest version in %s: %s", self.state_path, error)
        return best

    # --- updates ------------------------------------------------------------------

    def commit(self, new: Stored) -> None:
        """current.npz -> previous.npz (link + rename), then `new` -> current.npz (atomic)."""
        if self.current is not None:
            self._keep_as_previous()
            self.previous = self.current
        atomic_write(self.current_path, new.data)
        self.current = new
        self.highest_version = max(self.highest_version, new.policy.version)

    def _keep_as_previous(self) -> None:
        link = self.directory / f".{STATE_PREVIOUS_FILE}.link.tmp"
        link.unlink(missing_ok=True)
        try:
            os.link(self.current_path, link)  # same inode: no data to copy or fsync
            os.replace(link, self.previous_path)
        except OSError:  # no hard links on this file system: copy the bytes instead
            link.unlink(missing_ok=True)
            assert self.current is not None
            atomic_write(self.previous_path, self.current.data)

    def roll_back(self) -> Stored:
        """Refuse the current version from now on and make previous.npz current again."""
        assert self.current is not None and self.previous is not None
        bad = self.current.policy.version
        self.refused.add(bad)
        self.highest_version = max(self.highest_version, bad)
        good = self.previous
        try:
            self._write_state_file()  # first: a power cut after this never restores `bad`
            atomic_write(self.current_path, good.data)
        finally:  # the device runs `good` even when the disk refuses (the caller reports it)
            self.current = good
        return good

    def save_highest(self) -> None:
        """Record the highest accepted version in state.json when it rose: anti-rollback then
        survives a current.npz that is later lost or damaged (the fallback to previous.npz must
        not lower the floor). Called after current.npz is committed, so a power cut in between
        leaves the new version in current.npz, never a floor above every file."""
        if self.highest_version > self._persisted_highest:
            self._write_state_file()

    def _write_state_file(self) -> None:
        refused = sorted(self.refused)[-MAX_REFUSED_VERSIONS:]
        self.refused = set(refused)
        text = json.dumps({"highest_version": self.highest_version, "refused_versions": refused})
        atomic_write(self.state_path, text.encode("utf-8"))
        self._persisted_highest = self.highest_version


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
