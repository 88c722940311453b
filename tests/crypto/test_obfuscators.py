"""Tests for gradchain.crypto.obfuscators: the precomputed pool and its fallbacks.

The pools use a 512-bit DJN key, so worker processes start and fill quickly.
A test that starts worker processes checks afterwards that none is left.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gradchain.crypto.obfuscators import ObfuscatorPool, ObfuscatorSource, shared_source
from gradchain.crypto.packing import PackedEncoding
from gradchain.crypto.paillier import PrivateKey, PublicKey, generate_keypair
from gradchain.crypto.vector import decrypt_vector, encrypt_vector

Keypair = tuple[PublicKey, PrivateKey]

FILL_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def djn_512() -> Keypair:
    return generate_keypair(512, djn=True)


@pytest.fixture(scope="module")
def plain_512() -> Keypair:
    return generate_keypair(512, djn=False)


def decrypts_to_zero(private_key: PrivateKey, obfuscators: list[object]) -> bool:
    return all(private_key.raw_decrypt(int(value)) == 0 for value in obfuscators)  # type: ignore[call-overload]


def worker_processes(pool: ObfuscatorPool) -> list[object]:
    executor = pool._executor
    assert executor is not None
    return list(executor._processes.values())  # type: ignore[attr-defined]


@pytest.mark.parametrize("processes", [0, 2], ids=["thread", "processes"])
def test_pool_fills_in_background(djn_512: Keypair, processes: int) -> None:
    public_key, private_key = djn_512

    with ObfuscatorPool(public_key, size=40, processes=processes, batch_size=8) as pool:
        assert pool.wait_until_full(FILL_TIMEOUT)
        obfuscators = pool.take(40)
        stats = pool.stats()

    assert stats.taken_from_pool == 40
    assert stats.computed_on_the_spot == 0
    assert decrypts_to_zero(private_key, obfuscators)


@pytest.mark.parametrize("processes", [0, 2], ids=["thread", "processes"])
def test_pool_never_hands_out_an_obfuscator_twice(djn_512: Keypair, processes: int) -> None:
    # Four threads take at once while the pool refills and runs dry, so both
    # the pool path and the on-the-spot path are used concurrently.
    public_key, _ = djn_512
    taken: list[list[object]] = []
    lock = threading.Lock()

    with ObfuscatorPool(public_key, size=64, processes=processes, batch_size=8) as pool:
        assert pool.wait_until_full(FILL_TIMEOUT)

        def take_many() -> None:
            for _ in range(10):
                batch = pool.take(12)
                with lock:
                    taken.append(batch)

        threads = [threading.Thread(target=take_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = pool.stats()

    values = [int(value) for batch in taken for value in batch]  # type: ignore[call-overload]
    assert len(values) == 4 * 10 * 12
    assert len(set(values)) == len(values)
    assert stats.taken_from_pool + stats.computed_on_the_spot == len(values)
    assert stats.taken_from_pool >= 64


def test_empty_pool_computes_on_the_spot_and_counts(djn_512: Keypair) -> None:
    public_key, private_key = djn_512

    with ObfuscatorPool(public_key, size=0, processes=0) as pool:
        obfuscators = pool.take(5)
        stats = pool.stats()

    assert stats.taken_from_pool == 0
    assert stats.computed_on_the_spot == 5
    assert stats.available == 0
    assert decrypts_to_zero(private_key, obfuscators)
    assert len({int(value) for value in obfuscators}) == 5  # type: ignore[call-overload]


def test_partly_filled_pool_counts_both_sources(djn_512: Keypair) -> None:
    public_key, _ = djn_512

    with ObfuscatorPool(public_key, size=10, processes=0, batch_size=10) as pool:
        assert pool.wait_until_full(FILL_TIMEOUT)
        pool.take(25)
        stats = pool.stats()

    assert stats.taken_from_pool == 10
    assert stats.computed_on_the_spot == 15


def test_pool_before_start_computes_on_the_spot(djn_512: Keypair) -> None:
    pool = ObfuscatorPool(djn_512[0], size=10, processes=0)

    pool.take(3)

    assert pool.stats().computed_on_the_spot == 3
    pool.close()


def test_large_request_is_split_across_processes(djn_512: Keypair) -> None:
    public_key, private_key = djn_512

    with ObfuscatorPool(public_key, size=0, processes=2) as pool:
        obfuscators = pool.take(80)
        stats = pool.stats()

    assert stats.computed_on_the_spot == 80
    assert len({int(value) for value in obfuscators}) == 80  # type: ignore[call-overload]
    assert decrypts_to_zero(private_key, obfuscators[:5] + obfuscators[-5:])


def test_close_leaves_no_process_behind(djn_512: Keypair) -> None:
    pool = ObfuscatorPool(djn_512[0], size=64, processes=2, batch_size=8).start()
    assert pool.wait_until_full(FILL_TIMEOUT)
    processes = worker_processes(pool)
    assert processes

    pool.close()

    for process in processes:
        assert not process.is_alive()  # type: ignore[attr-defined]
    assert pool._filler is not None
    assert not pool._filler.is_alive()


def test_close_is_idempotent_and_take_after_close_raises(djn_512: Keypair) -> None:
    pool = ObfuscatorPool(djn_512[0], size=4, processes=0).start()
    pool.close()
    pool.close()

    with pytest.raises(RuntimeError, match="closed pool"):
        pool.take(1)
    with pytest.raises(RuntimeError, match="closed"):
        pool.start()


def test_close_drops_unused_obfuscators(djn_512: Keypair) -> None:
    pool = ObfuscatorPool(djn_512[0], size=8, processes=0).start()
    assert pool.wait_until_full(FILL_TIMEOUT)

    pool.close()

    assert pool.available == 0


def test_plain_key_pool(plain_512: Keypair) -> None:
    public_key, private_key = plain_512

    with ObfuscatorPool(public_key, size=6, processes=0, batch_size=3) as pool:
        assert pool.wait_until_full(FILL_TIMEOUT)
        obfuscators = pool.take(9)

    assert decrypts_to_zero(private_key, obfuscators)
    assert len({int(value) for value in obfuscators}) == 9  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"size": -1}, "size", id="negative-size"),
        pytest.param({"size": 4, "processes": -1}, "processes", id="negative-processes"),
        pytest.param({"size": 4, "batch_size": 0}, "batch_size", id="zero-batch"),
        pytest.param({"size": 4, "obfuscator_bits": 8}, "obfuscator_bits", id="short-bits"),
    ],
)
def test_pool_rejects_invalid_arguments(
    djn_512: Keypair, arguments: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ObfuscatorPool(djn_512[0], **arguments)


def test_source_djn_paths_agree_on_key(djn_512: Keypair) -> None:
    public_key, private_key = djn_512
    source = ObfuscatorSource(public_key)

    with_table = source.compute(3)
    without_gil = source.compute_without_gil(3)

    assert decrypts_to_zero(private_key, with_table + without_gil)


def test_shared_source_is_kept_per_key(djn_512: Keypair) -> None:
    assert shared_source(djn_512[0]) is shared_source(djn_512[0])


def test_encrypt_vector_takes_from_pool(djn_512: Keypair) -> None:
    public_key, private_key = djn_512
    encoding = PackedEncoding(key_bits=512, max_contributors=2)
    values = np.linspace(-5.0, 5.0, 40)

    with ObfuscatorPool(public_key, size=8, processes=0) as pool:
        assert pool.wait_until_full(FILL_TIMEOUT)
        ciphertexts, clipped = encrypt_vector(public_key, encoding, values, obfuscators=pool)
        stats = pool.stats()

    decoded = decrypt_vector(private_key, encoding, ciphertexts, 1, length=40)
    assert clipped == 0
    assert stats.taken_from_pool == len(ciphertexts) == encoding.ciphertext_count(40)
    np.testing.assert_allclose(decoded, values, atol=2.0**-32)


def test_encrypt_vector_rejects_pool_of_other_key(djn_512: Keypair, plain_512: Keypair) -> None:
    encoding = PackedEncoding(key_bits=512, max_contributors=2)
    pool = ObfuscatorPool(plain_512[0], size=0, processes=0)

    with pytest.raises(ValueError, match="belongs to key"):
        encrypt_vector(djn_512[0], encoding, np.zeros(3), obfuscators=pool)
