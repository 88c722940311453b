"""Tests for gradchain.crypto.settings: the encoding and pool a topology's settings describe."""

from __future__ import annotations

import pytest

from gradchain.crypto import (
    FixedPointEncoding,
    PackedEncoding,
    PrivateKey,
    PublicKey,
    generate_keypair,
    make_encoding,
    make_obfuscator_pool,
)
from gradchain.errors import ConfigError
from gradchain.topology import CryptoSettings

Keypair = tuple[PublicKey, PrivateKey]


def test_make_encoding_packs_by_default() -> None:
    encoding = make_encoding(CryptoSettings(), 12)

    assert encoding == PackedEncoding(key_bits=2048, max_contributors=12)


def test_make_encoding_passes_settings() -> None:
    settings = CryptoSettings(key_bits=1024, frac_bits=20, clip=8.0, value_bits=40)

    encoding = make_encoding(settings, 5)

    assert isinstance(encoding, PackedEncoding)
    assert encoding.frac_bits == 20
    assert encoding.clip == 8.0
    assert encoding.value_bits == 40
    assert encoding.headroom_bits == 3


def test_make_encoding_without_packing() -> None:
    encoding = make_encoding(CryptoSettings(packing=False, frac_bits=16, clip=3.0), 12)

    assert encoding == FixedPointEncoding(frac_bits=16, clip=3.0)


def test_make_encoding_rejects_slot_wider_than_plaintext() -> None:
    with pytest.raises(ConfigError, match="a slot needs"):
        make_encoding(CryptoSettings(key_bits=64, frac_bits=41), 3)


def test_pool_size_defaults_to_two_contributions() -> None:
    public_key, _ = generate_keypair(256, djn=True)

    pool = make_obfuscator_pool(
        CryptoSettings(key_bits=256), public_key, ciphertexts_per_contribution=7, processes=0
    )

    assert pool.size == 14
    assert pool.obfuscator_bits == 128


def test_pool_takes_size_and_obfuscator_bits_from_settings() -> None:
    public_key, _ = generate_keypair(512, djn=True)
    settings = CryptoSettings(key_bits=512, pool_size=3, obfuscator_bits=300)

    pool = make_obfuscator_pool(settings, public_key, ciphertexts_per_contribution=7, processes=0)

    assert pool.size == 3
    assert pool.obfuscator_bits == 300


def test_pool_for_plain_key_ignores_obfuscator_bits() -> None:
    public_key, _ = generate_keypair(512, djn=False)
    settings = CryptoSettings(key_bits=512, obfuscator_bits=300)

    pool = make_obfuscator_pool(settings, public_key, ciphertexts_per_contribution=1, processes=0)

    assert pool.size == 2
    assert not pool.public_key.is_djn
