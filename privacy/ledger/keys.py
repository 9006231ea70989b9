"""Where a privacy ledger's key lives, and the MAC'ed head file that records its last entry.

The 256-bit key of a ledger is kept outside the ledger's directory, in ``<key dir>/<ledger_id>.key``
(mode 0600, directory mode 0700); next to it, ``<ledger_id>.head`` records the last sequence number
and MAC written, so that a ledger cut short is detected. See :mod:`privacy.ledger`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privacy.atomic import fsync_dir
from privacy.errors import LedgerAuthenticationError, LedgerKeyError
from privacy.ledger.lines import canonical

__all__ = [
    "KEY_DIR_ENV",
    "create_key",
    "default_key_dir",
    "load_key",
    "read_head",
    "resolve_key_dir",
    "write_head",
]

#: Environment variable naming the key directory (tests point it at a temporary folder).
KEY_DIR_ENV = "SECFED_KEY_DIR"
_KEY_BYTES = 32
_HEAD_DOMAIN = b"secfed.privacy.ledger/v2/head\n"


def default_key_dir() -> Path:
    """The directory of ledger keys when none is given.

    Returns:
        ``$SECFED_KEY_DIR`` if set, else ``$XDG_CONFIG_HOME/secfed/keys``, else
        ``~/.config/secfed/keys``.
    """
    env = os.environ.get(KEY_DIR_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "secfed" / "keys"


def resolve_key_dir(*, key_dir: str | os.PathLike[str] | None, ledger_dir: Path) -> Path:
    """The absolute key directory of a ledger in ``ledger_dir``.

    Args:
        key_dir: the directory given (``None``: :func:`default_key_dir`).
        ledger_dir: the ledger file's directory.

    Returns:
        The resolved key directory.

    Raises:
        LedgerKeyError: the key directory is (inside) the ledger's directory.
    """
    kd = Path(key_dir) if key_dir is not None else default_key_dir()
    kd_abs, ld_abs = kd.expanduser().resolve(), ledger_dir.resolve()
    if kd_abs == ld_abs or ld_abs in kd_abs.parents:
        raise LedgerKeyError(
            f"key directory {kd_abs} is inside the ledger's directory {ld_abs}: whoever reads the run "
            f"directory could forge the ledger; keep keys elsewhere (${KEY_DIR_ENV})"
        )
    return kd_abs


def _key_file(key_dir: Path, ledger_id: str) -> Path:
    return key_dir / f"{ledger_id}.key"


def _head_file(key_dir: Path, ledger_id: str) -> Path:
    return key_dir / f"{ledger_id}.head"


def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
    """Write ``text`` to ``path`` with mode 0600 (fsync'ed; atomically replaced unless exclusive)."""
    target = path if exclusive else path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(target, flags, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if not exclusive:
        os.replace(target, path)
    fsync_dir(path.parent)


def create_key(*, key_dir: Path, ledger_id: str) -> bytes:
    """Create the key of a new ledger (random, 256 bits) in ``key_dir/<ledger_id>.key``, mode 0600.

    Args:
        key_dir: the key directory (created with mode 0700 if missing).
        ledger_id: the new ledger's id.

    Returns:
        The key.

    Raises:
        LedgerKeyError: a key for this id already exists.
    """
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = os.urandom(_KEY_BYTES)
    try:
        _write_private(_key_file(key_dir, ledger_id), key.hex() + "\n", exclusive=True)
    except FileExistsError as exc:  # pragma: no cover - 128-bit id collision
        raise LedgerKeyError(f"a key for ledger {ledger_id} already exists in {key_dir}") from exc
    return key


def load_key(*, key_dir: Path, ledger_id: str) -> bytes | None:
    """The key of ledger ``ledger_id``, or ``None`` if it is not in ``key_dir``.

    Args:
        key_dir: the key directory.
        ledger_id: the ledger's id.

    Returns:
        The key, or ``None``.

    Raises:
        LedgerKeyError: the key file is readable by others, unreadable, not hex, or too short.
    """
    path = _key_file(key_dir, ledger_id)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if os.name == "posix" and stat.S_IMODE(st.st_mode) & 0o077:
        raise LedgerKeyError(f"key file {path} is accessible to other users (mode {oct(st.st_mode & 0o777)})")
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LedgerKeyError(f"key file {path} is unreadable or not hex: {exc}") from exc
    if len(key) < _KEY_BYTES:
        raise LedgerKeyError(f"key file {path} holds {len(key)} bytes, at least {_KEY_BYTES} are required")
    return key


def _head_mac(key: bytes, head: Mapping[str, Any]) -> str:
    return hmac.new(key, _HEAD_DOMAIN + canonical(head).encode("utf-8"), hashlib.sha256).hexdigest()


def write_head(*, key: bytes, key_dir: Path, ledger_id: str, seq: int, mac: str) -> None:
    """Record (MAC'ed, atomically) that entry ``seq`` with MAC ``mac`` is the last one written.

    Args:
        key: the ledger's key.
        key_dir: the key directory.
        ledger_id: the ledger's id.
        seq: the last sequence number written (0: the header).
        mac: that line's MAC.
    """
    head = {"ledger_id": ledger_id, "seq": seq, "mac": mac}
    _write_private(
        _head_file(key_dir, ledger_id),
        canonical({**head, "head_mac": _head_mac(key, head)}) + "\n",
        exclusive=False,
    )


def read_head(*, key: bytes, key_dir: Path, ledger_id: str) -> tuple[int, str] | None:
    """The last sequence number and MAC written, as the head file records them.

    Args:
        key: the ledger's key.
        key_dir: the key directory.
        ledger_id: the ledger's id.

    Returns:
        ``(seq, mac)``, or ``None`` if there is no head file.

    Raises:
        LedgerAuthenticationError: the head file is malformed or fails its MAC.
    """
    path = _head_file(key_dir, ledger_id)
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        head = {"ledger_id": obj["ledger_id"], "seq": obj["seq"], "mac": obj["mac"]}
        ok = hmac.compare_digest(str(obj["head_mac"]), _head_mac(key, head))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LedgerAuthenticationError(f"head file {path} is malformed: {exc}") from exc
    if not ok or head["ledger_id"] != ledger_id or not isinstance(head["seq"], int):
        raise LedgerAuthenticationError(f"head file {path} fails its MAC")
    return int(head["seq"]), str(head["mac"])
