"""AES-256-GCM encryption of secrets, tagged with the id of the key that sealed them.

A sealed value is ``v1:<key id>:<base64url(nonce || ciphertext+tag)>``. The key id travels in clear
so that, after rotation, values sealed with an older key still open while it stays configured, and a
value whose key is gone fails with an error naming that key id. The key id and format version are
bound to the ciphertext as associated data, so a value cannot be re-labelled to another key.

The keyring is one object shared by the whole process, so a reload (``replace``) reaches every
holder at once. A value sealed under a key id the keyring lacks makes it call its ``reread`` hook
once (at most every ``REREAD_INTERVAL`` s) before failing: during an online rotation another replica
may seal with a key this one has not been told about yet, and the key source (environment, config
file) already has it.

Pure: no I/O, no aiohttp (``reread`` is injected); tested as plain functions.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import ConfigError, GatewayError, KeyNotFound

_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_VERSION = "v1"
REREAD_INTERVAL = 1.0  # seconds between two re-reads of the key source for unknown key ids


class DecryptionFailed(GatewayError):
    code = "decryption_failed"


@dataclass(repr=False, eq=False)
class Keyring:
    """Keys by id, newest first; the newest seals, any configured one opens."""

    keys: tuple[tuple[str, bytes], ...]
    reread: Callable[[], Keyring] | None = field(default=None, compare=False)
    _reread_at: float = field(default=float("-inf"), compare=False)

    def replace(self, other: Keyring) -> None:
        """Take ``other``'s keys, in place: every holder of this keyring sees them at once."""
        self.keys = other.keys

    @property
    def key_ids(self) -> list[str]:
        return [kid for kid, _ in self.keys]

    def __repr__(self) -> str:  # never show key material
        return f"Keyring(key_ids={self.key_ids!r})"

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Parse ``id:base64,id:base64`` (newest first); errors name the key and never echo it."""
        keys: list[tuple[str, bytes]] = []
        for n, item in enumerate(part.strip() for part in text.split(",") if part.strip()):
            kid, sep, encoded = item.partition(":")
            if not sep or not _KEY_ID.match(kid):
                raise ConfigError(f"encryption.keys: entry {n + 1} must look like 'key-id:base64'")
            try:
                raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ConfigError(f"encryption.keys: key {kid!r} must be 32 bytes of base64")
            if any(kid == seen for seen, _ in keys):
                raise ConfigError(f"encryption.keys: key id {kid!r} appears twice")
            keys.append((kid, raw))
        return cls(tuple(keys))

    @property
    def newest_id(self) -> str:
        if not self.keys:
            raise ConfigError("encryption.keys: no key configured (generate one with `gateway keys generate`)")
        return self.keys[0][0]

    def seal(self, plaintext: str) -> str:
        kid = self.newest_id
        nonce = os.urandom(12)
        ct = AESGCM(self.keys[0][1]).encrypt(nonce, plaintext.encode(), _aad(kid))
        return f"{_VERSION}:{kid}:{base64.urlsafe_b64encode(nonce + ct).decode()}"

    def open(self, sealed: str) -> str:
        _, kid, payload = _split(sealed)
        key = dict(self.keys).get(kid)
        if key is None and self._reread_for(kid):
            key = dict(self.keys).get(kid)
        if key is None:
            raise KeyNotFound(f"a stored secret is encrypted with key id {kid!r}, which is not in encryption.keys")
        try:
            blob = base64.urlsafe_b64decode(payload)
            return AESGCM(key).decrypt(blob[:12], blob[12:], _aad(kid)).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise DecryptionFailed(f"a stored secret sealed with key {kid!r} does not decrypt") from exc

    def _reread_for(self, kid: str) -> bool:
        """Re-read the key source once (rate-limited) hoping it has ``kid`` now; True if it was read."""
        now = time.monotonic()
        if self.reread is None or now - self._reread_at < REREAD_INTERVAL:
            return False
        self._reread_at = now
        try:
            fresh = self.reread()
        except ConfigError:
            return False  # a broken key source now is no reason to drop the keys in force
        if kid not in fresh.key_ids:
            return False
        self.replace(fresh)
        return True

    def key_id_of(self, sealed: str) -> str:
        return _split(sealed)[1]

    def reseal(self, sealed: str) -> str:
        """Open with whichever key sealed it, seal with the newest; unchanged if already newest."""
        if self.key_id_of(sealed) == self.newest_id:
            return sealed
        return self.seal(self.open(sealed))


def generate_key(key_id: str) -> str:
    """A new ``id:base64`` key for ``encryption.keys``."""
    if not _KEY_ID.match(key_id):
        raise ConfigError("key id may use letters, digits, '_', '.', '-' (at most 64)")
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def _aad(kid: str) -> bytes:
    return f"{_VERSION}:{kid}".encode()


def _split(sealed: str) -> tuple[str, str, str]:
    parts = sealed.split(":", 2)
    if len(parts) != 3 or parts[0] != _VERSION:
        raise DecryptionFailed("a stored secret is not in the vault's format")
    return parts[0], parts[1], parts[2]
