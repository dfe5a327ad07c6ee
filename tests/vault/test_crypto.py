"""AES-GCM sealing with key ids: round trips, rotation, missing keys, tampering, no key leaks."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError, KeyNotFound
from gateway.vault.crypto import DecryptionFailed, Keyring, generate_key


def test_sealed_value_opens_and_names_its_key() -> None:
    """A sealed value opens to the plaintext and carries the sealing key's id in clear."""
    ring = Keyring.parse(generate_key("k1"))
    sealed = ring.seal("sk_live_secret")
    assert "sk_live_secret" not in sealed
    assert ring.key_id_of(sealed) == "k1"
    assert ring.open(sealed) == "sk_live_secret"


def test_sealing_twice_gives_different_ciphertexts() -> None:
    """Every seal uses a fresh nonce."""
    ring = Keyring.parse(generate_key("k1"))
    assert ring.seal("x") != ring.seal("x")


def test_older_keys_still_open_and_reseal_moves_to_the_newest() -> None:
    """After rotation the old key opens old values; reseal re-encrypts with the newest key only once."""
    old_key, new_key = generate_key("old"), generate_key("new")
    sealed = Keyring.parse(old_key).seal("token")
    ring = Keyring.parse(f"{new_key},{old_key}")
    resealed = ring.reseal(sealed)
    assert ring.key_id_of(resealed) == "new"
    assert ring.open(resealed) == "token"
    assert ring.reseal(resealed) == resealed


def test_missing_key_error_names_the_key_id() -> None:
    """A value sealed with a key no longer configured fails with the key id named."""
    sealed = Keyring.parse(generate_key("gone")).seal("token")
    with pytest.raises(KeyNotFound, match="'gone'"):
        Keyring.parse(generate_key("other")).open(sealed)


def test_tampered_or_relabelled_ciphertext_is_refused() -> None:
    """The key id is bound as associated data: relabelling or flipping bits fails."""
    a, b = generate_key("a"), generate_key("b")
    ring = Keyring.parse(f"{a},{b}")
    sealed = ring.seal("token")
    relabelled = sealed.replace("v1:a:", "v1:b:")
    with pytest.raises(DecryptionFailed):
        ring.open(relabelled)
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(DecryptionFailed):
        ring.open(flipped)


@pytest.mark.parametrize("text", ["nocolon", "k1:bm90MzJieXRlcw==", "bad id!:AAAA", "k:%%%"])
def test_malformed_keys_are_config_errors_that_do_not_echo_the_key(text: str) -> None:
    """Bad key entries are refused naming the entry, never printing key material."""
    with pytest.raises(ConfigError) as info:
        Keyring.parse(text)
    assert "bm90MzJieXRlcw" not in str(info.value)


def test_repr_never_shows_key_material() -> None:
    """repr() of a keyring lists ids only."""
    key = generate_key("k1")
    assert key.split(":", 1)[1] not in repr(Keyring.parse(key))
