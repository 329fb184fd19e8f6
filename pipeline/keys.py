"""Keyed, deterministic pseudonyms (HMAC-SHA256).

Every pseudonym derives from one secret key and the original value, so every
worker on every node maps the same input the same way with no shared state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from pipeline.errors import KeyFileError

MIN_KEY_BYTES = 32


class Keyring:
    """A secret key and the pseudonym functions derived from it.

    Parameters
    ----------
    key
        Secret bytes, at least 32.
    ephemeral
        True when the key was generated for one run and is not stored anywhere.
    """

    __slots__ = ("_key", "ephemeral")

    def __init__(self, key: bytes, *, ephemeral: bool = False) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise KeyFileError(f"the secret key must hold at least {MIN_KEY_BYTES} bytes")
        self._key = bytes(key)
        self.ephemeral = ephemeral

    @classmethod
    def generate(cls) -> Keyring:
        """Return a random key that lives only as long as this object."""
        return cls(secrets.token_bytes(MIN_KEY_BYTES), ephemeral=True)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Keyring:
        """Read a key file: 64+ hex characters, or 32+ raw bytes."""
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read key file: {exc.strerror}") from exc
        text = raw.strip()
        try:
            decoded = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            decoded = raw
        return cls(decoded)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the key as hex to a new file readable by its owner only."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self._key.hex() + "\n")

    def __repr__(self) -> str:
        return f"Keyring(fingerprint={self.fingerprint!r}, ephemeral={self.ephemeral})"

    def __reduce__(self) -> tuple[type[Keyring], tuple[bytes], dict[str, bool]]:
        return (Keyring, (self._key,), {"ephemeral": self.ephemeral})

    def __setstate__(self, state: dict[str, bool]) -> None:
        self.ephemeral = state["ephemeral"]

    @property
    def fingerprint(self) -> str:
        """Short identifier of the key, safe to print and to record."""
        return self.digest("fingerprint", "")[:6].hex()

    def digest(self, purpose: str, value: str) -> bytes:
        """HMAC-SHA256 of ``value`` under a purpose-specific domain."""
        message = purpose.encode() + b"\x00" + value.encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """Map a UID to a ``2.25.`` UID derived from 128 bits of its HMAC."""
        return "2.25." + str(int.from_bytes(self.digest("uid", uid)[:16], "big"))

    def _stream(self, purpose: str, value: str, size: int) -> bytes:
        blocks = [self.digest(purpose, value)]
        counter = 1
        while len(blocks) * 32 < size:
            blocks.append(self.digest(f"{purpose}\x00{counter}", value))
            counter += 1
        return b"".join(blocks)

    def text(self, purpose: str, value: str, length: int) -> str:
        """Base32 (A-Z, 2-7) pseudonym of exactly ``length`` characters."""
        if length < 1:
            raise ValueError("length must be positive")
        raw = self._stream(purpose, value, length * 5 // 8 + 5)
        return base64.b32encode(raw).decode("ascii").rstrip("=")[:length]

    def digits(self, purpose: str, value: str, length: int) -> str:
        """Decimal pseudonym of exactly ``length`` digits."""
        if length < 1:
            raise ValueError("length must be positive")
        number = int.from_bytes(self._stream(purpose, value, length // 2 + 9), "big")
        return str(number).zfill(length)[-length:]

    def offset(self, purpose: str, value: str, low: int, high: int) -> int:
        """Integer in ``[low, high]`` derived from the value (for date shifts)."""
        if high < low:
            raise ValueError("empty offset range")
        number = int.from_bytes(self.digest(purpose, value)[:8], "big")
        return low + number % (high - low + 1)


