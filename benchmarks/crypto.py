"""Benchmark gradchain's packed DJN Paillier against python-paillier (phe).

Run from the repository root:

    python benchmarks/crypto.py [--quick] [--key-sizes 2048,3072] [--sizes 100,10000,100000]

For every key size and gradient size it measures, in one run each:

* phe: encryption and decryption per element of ``EncryptedNumber``s. For
  vectors longer than ``--phe-sample`` elements only that many elements are
  timed and the time per element is extrapolated, which the table marks.
* gradchain with the packed encoding and a DJN key: encryption with every
  obfuscator computed on the spot in one thread and across the worker
  processes of an empty :class:`ObfuscatorPool`, the online part with a full
  pool, decryption with one thread and with one thread per core, one hop
  (decode a contribution from the wire, check that its ciphertexts lie in
  ``(0, n**2)``, add it to the running sum, encode the result) with and
  without the gcd check of each ciphertext, and bytes per element on the wire.
* Ed25519 message signatures (``[signing]`` topologies): signing the
  outgoing contribution of the hop into a version 2 envelope, and checking
  the envelope and the signature of the incoming one, each the median of
  HOP_RUNS runs.
* X25519 sealed inboxes (``[signing]`` topologies unless ``seal = false``):
  sealing the outgoing contribution to its recipient and unsealing the
  incoming one, each the median of HOP_RUNS runs.

It writes ``crypto.json`` and ``crypto.md`` (``crypto-quick.*`` with
``--quick``) into ``--output-dir`` (default ``benchmarks/results``). See
docs/benchmarks.md for what each column means.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import secrets
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gmpy2  # type: ignore[import-untyped]
import numpy as np
import phe  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gradchain.crypto import (
    ObfuscatorPool,
    PackedEncoding,
    PrivateKey,
    PublicKey,
    add_vectors,
    decrypt_vector,
    encrypt_vector,
    generate_keypair,
)
from gradchain.crypto.fixed_base import DEFAULT_WINDOW_BITS, FixedBaseTable
from gradchain.crypto.obfuscators import shared_source
from gradchain.crypto.paillier import draw_djn_exponent
from gradchain.protocol.messages import Contribution
from gradchain.protocol.sealing import parse_sealed, seal_payload, unseal_payload
from gradchain.protocol.signing import sign_payload, signed_bytes, unwrap
from gradchain.protocol.wire import decode, encode

RESULTS = Path(__file__).resolve().parent / "results"

#: Providers whose contributions one total may sum. It sizes the slot headroom
#: (4 bits), like the 12-provider examples in examples/.
MAX_CONTRIBUTORS = 12

#: Targets for a 2048-bit key and 10,000 floats.
TARGET_KEY_BITS = 2048
TARGET_SIZE = 10_000
TARGET_ENCRYPT_RATIO = 300.0
TARGET_ONLINE_MS = 10.0
TARGET_DECRYPT_RATIO = 30.0
TARGET_HOP_MS = 3.0
TARGET_BYTES_PER_ELEMENT = 20.0

RUN_ID = "0123456789abcdef"

#: Timed runs of each hop variant. The figure reported is their median.
HOP_RUNS = 5


@dataclass(frozen=True)
class Options:
    quick: bool
    key_sizes: list[int]
    sizes: list[int]
    phe_sample: int
    processes: int
    output_dir: Path
    command: str


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 2048-bit key, 100 floats")
    parser.add_argument(
        "--key-sizes", help="comma-separated key sizes in bits (default 2048,3072; quick: 2048)"
    )
    parser.add_argument(
        "--sizes", help="comma-separated gradient lengths (default 100,10000,100000; quick: 100)"
    )
    parser.add_argument(
        "--phe-sample",
        type=int,
        help="elements timed per phe measurement (default 200; quick: 20)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes for gradchain's obfuscator pool (default: one per core)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=RESULTS,
        help=f"folder for the results (default {RESULTS})",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    if quick:
        key_sizes, sizes, phe_sample = [2048], [100], 20
    else:
        key_sizes, sizes, phe_sample = [2048, 3072], [100, 10_000, 100_000], 200
    if args.key_sizes:
        key_sizes = _int_list(args.key_sizes)
    if args.sizes:
        sizes = _int_list(args.sizes)
    if args.phe_sample is not None:
        phe_sample = args.phe_sample

    if phe_sample < 1 or args.processes < 1 or min(sizes) < 1 or min(key_sizes) < 64:
        parser.error("--phe-sample, --processes and --sizes must be >= 1, key sizes >= 64")
    command = "python benchmarks/crypto.py" + "".join(f" {shlex.quote(a)}" for a in argv)
    return Options(quick, key_sizes, sizes, phe_sample, args.processes, args.output_dir, command)


def _int_list(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """Return the seconds ``function`` took and its result."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def environment(options: Options) -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "command": options.command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model,
        "cores": os.cpu_count() or 1,
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "gmpy2": gmpy2.version(),
        "gmp": gmpy2.mp_version(),
        "phe": importlib.metadata.version("phe"),
        "numpy": np.__version__,
        "processes": options.processes,
    }


def measure_gil(modulus_bits: int = 2048, count: int = 48, repeats: int = 3) -> dict[str, Any]:
    """Time gmpy2 calls in one thread and in two threads at once, best of ``repeats``.

    A speedup near 2 with two threads means the call releases the GIL. The
    best of several runs keeps other load on a shared machine from hiding it.
    """
    modulus = gmpy2.mpz(secrets.randbits(2 * modulus_bits) | 1)
    base = gmpy2.mpz(secrets.randbelow(int(modulus)))
    exponents = [gmpy2.mpz(secrets.randbits(modulus_bits // 2)) for _ in range(count)]

    def exp_list() -> None:
        gmpy2.powmod_exp_list(base, exponents, modulus)

    def base_list() -> None:
        gmpy2.powmod_base_list(exponents, base, modulus)

    def plain_powmod() -> None:
        for exponent in exponents:
            gmpy2.powmod(base, exponent, modulus)

    def multiply() -> None:
        value = base
        for _ in range(count * 100):
            value = value * base % modulus

    result: dict[str, Any] = {
        "modulus_bits": 2 * modulus_bits,
        "calls_per_thread": count,
        "best_of": repeats,
    }
    for name, function in [
        ("powmod_exp_list", exp_list),
        ("powmod_base_list", base_list),
        ("powmod", plain_powmod),
        ("mpz_multiply_mod", multiply),
    ]:
        one = min(timed(function)[0] for _ in range(repeats))
        two = min(_time_two_threads(function) for _ in range(repeats))
        # Two threads doing twice the work in the time of one is a speedup of 2.
        result[name] = {"one_thread_s": one, "two_threads_s": two, "speedup": 2 * one / two}
    return result


def _time_two_threads(function: Callable[[], None]) -> float:
    """Return the seconds two threads take to run ``function`` at the same time."""
    threads = [threading.Thread(target=function) for _ in range(2)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def measure_fixed_base(public_key: PublicKey, samples: int) -> dict[str, Any]:
    """Compare one DJN obfuscator from the fixed-base table with gmpy2.powmod."""
    assert public_key.hs is not None
    bits = public_key.default_obfuscator_bits
    build_s, table = timed(
        lambda: FixedBaseTable(public_key.hs, public_key.nsquare, bits, DEFAULT_WINDOW_BITS)
    )
    exponents = [draw_djn_exponent(bits) for _ in range(samples)]
    hs = gmpy2.mpz(public_key.hs)
    nsquare = gmpy2.mpz(public_key.nsquare)
    table_s, _ = timed(lambda: [table.power(e) for e in exponents])
    powmod_s, _ = timed(lambda: [gmpy2.powmod(hs, e, nsquare) for e in exponents])
    return {
        "window_bits": DEFAULT_WINDOW_BITS,
        "exponent_bits": bits,
        "table_entries": table.entries,
        "table_megabytes": table.entries * public_key.ciphertext_bytes / 1e6,
        "table_build_s": build_s,
        "table_ms_per_obfuscator": 1e3 * table_s / samples,
        "powmod_ms_per_obfuscator": 1e3 * powmod_s / samples,
    }


def measure_phe(
    phe_keys: tuple[Any, Any], values: np.ndarray, sample: int
) -> dict[str, Any]:
    """Time phe per element on the first ``sample`` values and extrapolate."""
    public_key, private_key = phe_keys
    subset = [float(v) for v in values[:sample]]
    encrypt_s, encrypted = timed(lambda: [public_key.encrypt(v) for v in subset])
    decrypt_s, decrypted = timed(lambda: [private_key.decrypt(c) for c in encrypted])
    add_s, _ = timed(lambda: [a + b for a, b in zip(encrypted, encrypted, strict=True)])
    assert np.allclose(decrypted, subset)
    # phe ciphertexts are Paillier ciphertexts modulo n**2, so gradchain's
    # wire format carries them at the same fixed width.
    width = (public_key.nsquare.bit_length() + 7) // 8
    payload = encode(
        contribution([c.ciphertext(be_secure=False) for c in encrypted]), ciphertext_bytes=width
    )
    count = len(subset)
    return {
        "elements_timed": count,
        "extrapolated": count < len(values),
        "encrypt_ms_per_element": 1e3 * encrypt_s / count,
        "decrypt_ms_per_element": 1e3 * decrypt_s / count,
        "add_ms_per_element": 1e3 * add_s / count,
        "bytes_per_element": len(payload) / count,
    }


def contribution(ciphertexts: list[int], sender: str = "p2") -> Contribution:
    return Contribution(
        job="bench",
        run=RUN_ID,
        round=1,
        sender=sender,
        contributors=(sender,),
        ciphertexts=tuple(ciphertexts),
    )


def measure_sealing(incoming: bytes, outgoing: bytes, message: Contribution) -> dict[str, Any]:
    """Time the X25519 work of one sealed hop: unseal the incoming payload, seal the outgoing one.

    Unsealing covers parsing the version 3 envelope, the X25519 exchange,
    HKDF and ChaCha20-Poly1305, but not decoding the message inside.
    """
    recipient = X25519PrivateKey.generate()
    recipient_public = recipient.public_key()

    def seal_for_recipient(body: bytes) -> bytes:
        return seal_payload(
            body,
            job="bench",
            sender="p1",
            recipient="p2",
            recipient_key=recipient_public,
            message=message,
        )

    sealed_incoming = seal_for_recipient(incoming)

    def unseal() -> None:
        envelope = parse_sealed(sealed_incoming)
        assert envelope is not None
        unseal_payload(envelope, job="bench", own_id="p2", private_key=recipient)

    unseal()
    seal_runs = [timed(lambda: seal_for_recipient(outgoing))[0] for _ in range(HOP_RUNS)]
    unseal_runs = [timed(unseal)[0] for _ in range(HOP_RUNS)]
    return {
        "seal_ms": 1e3 * float(np.median(seal_runs)),
        "unseal_ms": 1e3 * float(np.median(unseal_runs)),
        "sealed_bytes_overhead": len(sealed_incoming) - len(incoming),
    }


def measure_signatures(incoming: bytes, outgoing: bytes) -> dict[str, Any]:
    """Time the Ed25519 work of one signed hop: verify the incoming payload, sign the outgoing one.

    Verifying covers the envelope checks of ``unwrap`` and the signature
    check, but not decoding the body, which the unsigned hop does too.
    """
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    signed_incoming = sign_payload(incoming, "p2", key)

    def verify() -> None:
        envelope = unwrap(signed_incoming)
        assert envelope is not None
        signer, body, signature = envelope
        public.verify(signature, signed_bytes(signer, body))

    verify()
    sign_runs = [timed(lambda: sign_payload(outgoing, "p1", key))[0] for _ in range(HOP_RUNS)]
    verify_runs = [timed(verify)[0] for _ in range(HOP_RUNS)]
    return {
        "sign_ms": 1e3 * float(np.median(sign_runs)),
        "verify_ms": 1e3 * float(np.median(verify_runs)),
        "signed_bytes_overhead": len(signed_incoming) - len(incoming),
    }


def measure_gradchain(
    keypair: tuple[PublicKey, PrivateKey],
    values: np.ndarray,
    spot_pool: ObfuscatorPool,
    options: Options,
) -> dict[str, Any]:
    public_key, private_key = keypair
    size = len(values)
    encoding = PackedEncoding(key_bits=public_key.n.bit_length(), max_contributors=MAX_CONTRIBUTORS)
    count = encoding.ciphertext_count(size)
    result: dict[str, Any] = {
        "ciphertexts": count,
        "slots_per_ciphertext": encoding.slots,
        "slot_bits": encoding.slot_bits,
    }

    spot_1core_s, (first, _) = timed(lambda: encrypt_vector(public_key, encoding, values))
    result["encrypt_on_the_spot_1_thread_ms"] = 1e3 * spot_1core_s

    before = spot_pool.stats().computed_on_the_spot
    spot_all_s, (second, _) = timed(
        lambda: encrypt_vector(public_key, encoding, values, obfuscators=spot_pool)
    )
    assert spot_pool.stats().computed_on_the_spot - before == count
    result["encrypt_on_the_spot_all_cores_ms"] = 1e3 * spot_all_s

    with ObfuscatorPool(public_key, size=count, processes=options.processes) as pool:
        fill_s, full = timed(lambda: pool.wait_until_full(timeout=3600))
        assert full, "the obfuscator pool did not fill"
        online_s, _ = timed(lambda: encrypt_vector(public_key, encoding, values, obfuscators=pool))
        stats = pool.stats()
    assert stats.taken_from_pool == count
    assert stats.computed_on_the_spot == 0
    result["pool_fill_s"] = fill_s
    result["pool_obfuscators_per_s"] = count / fill_s
    result["encrypt_online_full_pool_ms"] = 1e3 * online_s

    width = public_key.ciphertext_bytes
    incoming = encode(contribution(second, "p2"), ciphertext_bytes=width)

    def hop(check: Callable[[tuple[int, ...]], None]) -> bytes:
        message = decode(incoming)
        assert isinstance(message, Contribution)
        check(message.ciphertexts)
        total = add_vectors(public_key, first, message.ciphertexts)
        return encode(contribution(total, "p1"), ciphertext_bytes=width)

    def check_range(ciphertexts: tuple[int, ...]) -> None:
        nsquare = public_key.nsquare
        assert all(0 < c < nsquare for c in ciphertexts)

    def check_batch(ciphertexts: tuple[int, ...]) -> None:
        assert public_key.first_invalid_ciphertext(ciphertexts) is None

    def check_each(ciphertexts: tuple[int, ...]) -> None:
        assert all(public_key.is_valid_ciphertext(c) for c in ciphertexts)

    # A node runs a hop every round, so the hop figures are the median of
    # HOP_RUNS runs after one untimed run that warms the caches.
    outgoing = hop(check_range)
    for name, check in [
        ("hop_ms", check_range),
        ("hop_with_batch_gcd_ms", check_batch),
        ("hop_with_per_ciphertext_gcd_ms", check_each),
    ]:
        runs = [timed(lambda check=check: hop(check))[0] for _ in range(HOP_RUNS)]
        result[name] = 1e3 * float(np.median(runs))
    add_s, total = timed(lambda: add_vectors(public_key, first, second))
    result["add_only_ms"] = 1e3 * add_s
    result["bytes_per_element"] = len(outgoing) / size
    result.update(measure_signatures(incoming, outgoing))
    result.update(measure_sealing(incoming, outgoing, contribution(second, "p2")))

    decrypt_all_s, decoded = timed(
        lambda: decrypt_vector(private_key, encoding, total, 2, 1, length=size)
    )
    decrypt_1_s, decoded_serial = timed(
        lambda: decrypt_vector(private_key, encoding, total, 2, 1, length=size, workers=1)
    )
    error = float(np.max(np.abs(decoded - 2 * values)))
    assert error <= 2 * 2.0**-encoding.frac_bits, f"decoded total is off by {error}"
    assert np.array_equal(decoded, decoded_serial)
    result["decrypt_all_cores_ms"] = 1e3 * decrypt_all_s
    result["decrypt_1_thread_ms"] = 1e3 * decrypt_1_s
    result["max_decoding_error"] = error
    return result


def summarise(size: int, phe_row: dict[str, Any], gc: dict[str, Any]) -> dict[str, Any]:
    """Add per-element figures, ratios gradchain/phe and the target checks to one row."""
    per_element = {
        key.removesuffix("_ms") + "_us_per_element": 1e3 * gc[key] / size
        for key in (
            "encrypt_on_the_spot_1_thread_ms",
            "encrypt_on_the_spot_all_cores_ms",
            "encrypt_online_full_pool_ms",
            "decrypt_all_cores_ms",
            "decrypt_1_thread_ms",
        )
    }
    phe_encrypt_ms = phe_row["encrypt_ms_per_element"] * size
    phe_decrypt_ms = phe_row["decrypt_ms_per_element"] * size
    ratios = {
        "encrypt_on_the_spot_all_cores": phe_encrypt_ms / gc["encrypt_on_the_spot_all_cores_ms"],
        "encrypt_on_the_spot_1_thread": phe_encrypt_ms / gc["encrypt_on_the_spot_1_thread_ms"],
        "encrypt_online_full_pool": phe_encrypt_ms / gc["encrypt_online_full_pool_ms"],
        "decrypt_all_cores": phe_decrypt_ms / gc["decrypt_all_cores_ms"],
        "decrypt_1_thread": phe_decrypt_ms / gc["decrypt_1_thread_ms"],
        "bytes_per_element": phe_row["bytes_per_element"] / gc["bytes_per_element"],
    }
    targets = {
        "encrypt_ratio_at_least_300": (
            ratios["encrypt_on_the_spot_all_cores"] >= TARGET_ENCRYPT_RATIO
        ),
        "online_at_most_10_ms": gc["encrypt_online_full_pool_ms"] <= TARGET_ONLINE_MS,
        "decrypt_ratio_at_least_30": ratios["decrypt_all_cores"] >= TARGET_DECRYPT_RATIO,
        "hop_at_most_3_ms": gc["hop_ms"] <= TARGET_HOP_MS,
        "bytes_per_element_at_most_20": gc["bytes_per_element"] <= TARGET_BYTES_PER_ELEMENT,
    }
    return {
        "size": size,
        "phe": phe_row,
        "gradchain": {**gc, **per_element},
        "ratios_phe_over_gradchain": ratios,
        "targets": targets,
    }


def run_key_size(bits: int, options: Options, rng: np.random.Generator) -> dict[str, Any]:
    print(f"key size {bits}: generating keys", flush=True)
    keygen_s, keypair = timed(lambda: generate_keypair(bits, djn=True))
    phe_keygen_s, phe_keys = timed(lambda: phe.paillier.generate_paillier_keypair(n_length=bits))
    public_key = keypair[0]
    fixed_base = measure_fixed_base(public_key, samples=10 if options.quick else 50)
    shared_source(public_key).prepare()

    rows = []
    with ObfuscatorPool(public_key, size=0, processes=options.processes) as spot_pool:
        # Start the worker processes and build their tables before timing.
        spot_pool.take(32 * options.processes)
        for size in options.sizes:
            print(f"key size {bits}: {size} floats", flush=True)
            values = rng.normal(scale=10.0, size=size)
            phe_row = measure_phe(phe_keys, values, options.phe_sample)
            gc = measure_gradchain(keypair, values, spot_pool, options)
            rows.append(summarise(size, phe_row, gc))
    return {
        "key_bits": bits,
        "gradchain_keygen_s": keygen_s,
        "phe_keygen_s": phe_keygen_s,
        "fixed_base": fixed_base,
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# gradchain crypto benchmark",
        "",
        f"Command: `{env['command']}`",
        "",
        f"- CPU: {env['cpu_model']}, {env['cores']} cores "
        f"(load average at start {', '.join(f'{x:.2f}' for x in env['load_average_at_start'])})",
        f"- Python {env['python']}, gmpy2 {env['gmpy2']} ({env['gmp']}), phe {env['phe']}, "
        f"numpy {env['numpy']}",
        f"- Date: {env['date']}, worker processes: {env['processes']}, "
        f"slot headroom for {report['settings']['max_contributors']} contributors",
        "",
        "Every figure comes from one run. phe columns marked * timed only the first "
        f"{report['settings']['phe_sample']} elements and extrapolate per element.",
        "",
    ]
    for key in report["keys"]:
        fb = key["fixed_base"]
        lines += [
            f"## {key['key_bits']}-bit key",
            "",
            f"Key generation: gradchain (DJN) {key['gradchain_keygen_s']:.2f} s, "
            f"phe {key['phe_keygen_s']:.2f} s. Fixed-base table (w = {fb['window_bits']}, "
            f"{fb['exponent_bits']}-bit exponents): {fb['table_megabytes']:.1f} MB built in "
            f"{fb['table_build_s']:.3f} s, {fb['table_ms_per_obfuscator']:.3f} ms per obfuscator "
            f"against {fb['powmod_ms_per_obfuscator']:.3f} ms with gmpy2.powmod.",
            "",
            "| floats | ciphertexts | phe enc ms/elem | gc enc 1 thread ms | gc enc all cores ms "
            "| enc ratio | gc online ms | pool fill s | phe dec ms/elem | gc dec all cores ms "
            "| dec ratio | hop ms | hop + batch gcd ms | hop + gcd each ms | bytes/elem phe "
            "| bytes/elem gc |",
            "|" + "---|" * 16,
        ]
        for row in key["rows"]:
            phe_row, gc, ratio = row["phe"], row["gradchain"], row["ratios_phe_over_gradchain"]
            mark = "*" if phe_row["extrapolated"] else ""
            lines.append(
                f"| {row['size']:,} | {gc['ciphertexts']} "
                f"| {phe_row['encrypt_ms_per_element']:.2f}{mark} "
                f"| {gc['encrypt_on_the_spot_1_thread_ms']:.1f} "
                f"| {gc['encrypt_on_the_spot_all_cores_ms']:.1f} "
                f"| {ratio['encrypt_on_the_spot_all_cores']:.0f}x "
                f"| {gc['encrypt_online_full_pool_ms']:.2f} "
                f"| {gc['pool_fill_s']:.2f} | {phe_row['decrypt_ms_per_element']:.2f}{mark} "
                f"| {gc['decrypt_all_cores_ms']:.1f} | {ratio['decrypt_all_cores']:.0f}x "
                f"| {gc['hop_ms']:.2f} | {gc['hop_with_batch_gcd_ms']:.2f} "
                f"| {gc['hop_with_per_ciphertext_gcd_ms']:.2f} "
                f"| {phe_row['bytes_per_element']:.0f} | {gc['bytes_per_element']:.1f} |"
            )
        lines += [
            "",
            "Ed25519 signatures of one hop, for `[signing]` topologies: verify the incoming "
            "contribution, sign the outgoing one.",
            "",
            "| floats | sign ms | verify ms | sign + verify ms | hop ms | share of signed hop "
            "| bytes added |",
            "|" + "---|" * 7,
        ]
        for row in key["rows"]:
            gc = row["gradchain"]
            both = gc["sign_ms"] + gc["verify_ms"]
            lines.append(
                f"| {row['size']:,} | {gc['sign_ms']:.3f} | {gc['verify_ms']:.3f} | {both:.3f} "
                f"| {gc['hop_ms']:.2f} | {100 * both / (both + gc['hop_ms']):.1f}% "
                f"| {gc['signed_bytes_overhead']} |"
            )
        lines += [
            "",
            "X25519 sealing of one hop, for `[signing]` topologies with `seal = true`: unseal "
            "the incoming contribution, seal the outgoing one.",
            "",
            "| floats | seal ms | unseal ms | seal + unseal ms | hop ms | share of sealed hop "
            "| bytes added |",
            "|" + "---|" * 7,
        ]
        for row in key["rows"]:
            gc = row["gradchain"]
            both = gc["seal_ms"] + gc["unseal_ms"]
            lines.append(
                f"| {row['size']:,} | {gc['seal_ms']:.3f} | {gc['unseal_ms']:.3f} | {both:.3f} "
                f"| {gc['hop_ms']:.2f} | {100 * both / (both + gc['hop_ms']):.1f}% "
                f"| {gc['sealed_bytes_overhead']} |"
            )
        lines.append("")
    lines += ["## Targets (2048-bit key, 10,000 floats)", ""]
    if report["targets"]:
        lines += ["| target | measured | met |", "|---|---|---|"]
        for target in report["targets"]:
            met = "yes" if target["met"] else "no"
            lines.append(f"| {target['name']} | {target['measured']:.2f} | {met} |")
    else:
        lines.append("This run did not include a 2048-bit key with 10,000 floats.")
    gil = report["gil"]
    lines += [
        "",
        f"## GIL check ({gil['modulus_bits']}-bit modulus, {gil['calls_per_thread']} calls per "
        f"thread, best of {gil['best_of']})",
        "",
        "Speedup of two threads over one, each thread doing the same work; "
        "2 means the call releases the GIL.",
        "",
        "| call | one thread s | two threads s | speedup |",
        "|---|---|---|---|",
    ]
    for name in ("powmod_exp_list", "powmod_base_list", "powmod", "mpz_multiply_mod"):
        entry = gil[name]
        lines.append(
            f"| {name} | {entry['one_thread_s']:.3f} | {entry['two_threads_s']:.3f} "
            f"| {entry['speedup']:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


def target_summary(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for key in keys:
        if key["key_bits"] != TARGET_KEY_BITS:
            continue
        for row in key["rows"]:
            if row["size"] != TARGET_SIZE:
                continue
            gc, ratio, met = row["gradchain"], row["ratios_phe_over_gradchain"], row["targets"]
            return [
                {
                    "name": "node encryption vs phe per element (on the spot, all cores), >= 300x",
                    "measured": ratio["encrypt_on_the_spot_all_cores"],
                    "met": met["encrypt_ratio_at_least_300"],
                },
                {
                    "name": "online encryption with a full pool, <= 10 ms",
                    "measured": gc["encrypt_online_full_pool_ms"],
                    "met": met["online_at_most_10_ms"],
                },
                {
                    "name": "learner decryption vs phe (all cores), >= 30x",
                    "measured": ratio["decrypt_all_cores"],
                    "met": met["decrypt_ratio_at_least_30"],
                },
                {
                    "name": "hop: decode, range check, add, encode, <= 3 ms",
                    "measured": gc["hop_ms"],
                    "met": met["hop_at_most_3_ms"],
                },
                {
                    "name": "bytes per element on the wire, <= 20",
                    "measured": gc["bytes_per_element"],
                    "met": met["bytes_per_element_at_most_20"],
                },
            ]
    return []


def main(argv: list[str]) -> int:
    options = parse_options(argv)
    rng = np.random.default_rng(2024)
    report: dict[str, Any] = {
        "quick": options.quick,
        "environment": environment(options),
        "settings": {
            "max_contributors": MAX_CONTRIBUTORS,
            "phe_sample": options.phe_sample,
            "key_sizes": options.key_sizes,
            "sizes": options.sizes,
        },
    }
    started = time.perf_counter()
    report["gil"] = measure_gil()
    report["keys"] = [run_key_size(bits, options, rng) for bits in options.key_sizes]
    report["targets"] = target_summary(report["keys"])
    report["environment"]["load_average_at_end"] = list(os.getloadavg())
    report["environment"]["seconds"] = time.perf_counter() - started

    options.output_dir.mkdir(parents=True, exist_ok=True)
    stem = "crypto-quick" if options.quick else "crypto"
    json_path = options.output_dir / f"{stem}.json"
    markdown_path = options.output_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    markdown_path.write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {json_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
