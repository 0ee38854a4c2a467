"""The server secret that signs capabilities.

From, in order: ``ServerOptions.secret``; the ``TETHER_SECRET`` environment variable;
a file ``secret`` in the server's data directory (made once, mode 0600, 32 random bytes);
else a fresh random secret for this process only, so that capabilities handed out do not
survive a restart.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

__all__ = ["MIN_SECRET_BYTES", "load_secret"]

log = logging.getLogger("tether")

MIN_SECRET_BYTES = 16
FILE_NAME = "secret"


def load_secret(secret: bytes | str | None, data_dir: str | os.PathLike[str] | None) -> bytes:
    """The secret to sign capabilities with.

    Raises:
        ValueError: a configured secret shorter than 16 bytes.
    """
    if secret is None:
        secret = os.environ.get("TETHER_SECRET") or None
    if secret is not None:
        value = secret.encode() if isinstance(secret, str) else secret
        if len(value) < MIN_SECRET_BYTES:
            raise ValueError(f"the server secret must be at least {MIN_SECRET_BYTES} bytes")
        return value
    if data_dir is None:
        log.info("no TETHER_SECRET or data directory: capabilities will not survive a restart")
        return secrets.token_bytes(32)
    return _from_file(Path(data_dir) / FILE_NAME)


def _from_file(path: Path) -> bytes:
    try:
        value = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ValueError(f"{path} does not hold a hex secret: delete it to make a new one") from exc
    else:
        if len(value) < MIN_SECRET_BYTES:
            raise ValueError(f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes")
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return bytes.fromhex(path.read_text().strip())
    try:
        os.write(fd, value.hex().encode() + b"\n")
    finally:
        os.close(fd)
    log.info("made a new server secret in %s", path)
    return value
