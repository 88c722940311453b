"""Tests for the benchmark-only unencrypted encoding and for crypto.encryption = false in topology files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from gradchain.crypto import (
    add_vectors,
    decrypt_vector,
    encode_unencrypted_vector,
    generate_keypair,
    make_encoding,
    open_unencrypted_vector,
)
from gradchain.errors import ConfigError, CryptoError
from gradchain.topology import CryptoSettings, load_topology, write_chain


@pytest.fixture(scope="module")
def keys():  # type: ignore[no-untyped-def]
    return generate_keypair(512)


def test_unencrypted_sum_opens_without_private_key(keys) -> None:  # type: ignore[no-untyped-def]
    public, private = keys
    encoding = make_encoding(CryptoSettings(key_bits=512), 3)
    a, _ = encode_unencrypted_vector(public, encoding, [1.5, -2.0, 3.25])
    b, _ = encode_unencrypted_vector(public, encoding, [0.5, 1.0, -1.0])
    total = add_vectors(public, a, b)
    np.testing.assert_allclose(
        open_unencrypted_vector(public, encoding, total, 2, length=3), [2.0, -1.0, 2.25]
    )
    # The ciphertexts are valid Paillier ciphertexts, so the private key reads the same total.
    np.testing.assert_allclose(
        decrypt_vector(private, encoding, total, 2, length=3), [2.0, -1.0, 2.25]
    )


def test_unencrypted_ciphertext_is_one_plus_m_times_n(keys) -> None:  # type: ignore[no-untyped-def]
    public, _ = keys
    encoding = make_encoding(CryptoSettings(key_bits=512), 3)
    (ciphertext, *_), _ = encode_unencrypted_vector(public, encoding, [1.0])
    assert (ciphertext - 1) % public.n == 0


def test_open_rejects_encrypted_ciphertext(keys) -> None:  # type: ignore[no-untyped-def]
    public, _ = keys
    encoding = make_encoding(CryptoSettings(key_bits=512), 3)
    with pytest.raises(CryptoError, match="slot 0"):
        open_unencrypted_vector(public, encoding, [public.raw_encrypt(5)], 1, length=1)


def _chain(tmp_path: Path) -> Path:
    return write_chain(tmp_path, "synthetic:5x40", 4, job_id="plain", key_bits=512)


def _set_crypto(path: Path, lines: str) -> None:
    text = path.read_text().replace("[crypto]\n", f"[crypto]\n{lines}\n", 1)
    path.write_text(text)


def test_encryption_off_needs_insecure(tmp_path: Path) -> None:
    path = _chain(tmp_path)
    _set_crypto(path, "encryption = false")
    with pytest.raises(ConfigError, match=re.escape("crypto.insecure = true")):
        load_topology(path)


def test_encryption_off_with_insecure_loads(tmp_path: Path) -> None:
    path = _chain(tmp_path)
    _set_crypto(path, "encryption = false\ninsecure = true")
    crypto = load_topology(path).crypto
    assert crypto.encryption is False
    assert crypto.insecure is True


def test_encryption_on_by_default(tmp_path: Path) -> None:
    assert load_topology(_chain(tmp_path)).crypto.encryption is True
