"""Obfuscators computed ahead of time, so that online encryption is one multiplication.

A Paillier encryption ``(1 + m*n) * obfuscator mod n**2`` spends almost all
its time on the obfuscator, an encryption of 0 that does not depend on ``m``:
``hs**r mod n**2`` for a DJN key, ``r**n mod n**2`` for a plain key. An
:class:`ObfuscatorPool` computes obfuscators in the background between rounds
and hands each one out once. When the pool runs dry, it computes the missing
ones on the spot and counts them, so metrics can report how many encryptions
paid the full price.

Where the work runs:

* In the background, the pool fills itself from ``processes`` worker
  processes (started with the ``spawn`` method). Each worker builds its own
  :class:`~gradchain.crypto.fixed_base.FixedBaseTable` for ``hs``. With
  ``processes=0`` a single background thread fills the pool instead, with
  gmpy2's ``powmod_exp_list`` or ``powmod_base_list``, which release the GIL.
* On the spot, the calling thread uses its own fixed-base table for a DJN key
  (a few microseconds of GIL per multiplication) and ``powmod_base_list``
  for a plain key. Requests of at least :data:`PARALLEL_MIN_PER_PROCESS` per
  worker process are split across the worker processes, so a large gradient
  uses every core.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache, partial
from types import TracebackType

from gradchain.crypto import _gmp
from gradchain.crypto.fixed_base import DEFAULT_WINDOW_BITS, FixedBaseTable
from gradchain.crypto.paillier import PublicKey, draw_djn_exponent

logger = logging.getLogger(__name__)

#: Obfuscators per background batch. A batch takes about 30 ms in a worker
#: process for a 2048-bit DJN key, so closing the pool waits at most that long.
DEFAULT_BATCH_SIZE = 32

#: An on-the-spot request is split across worker processes only when each
#: process gets at least this many obfuscators, because a round trip to a
#: process costs about a millisecond.
PARALLEL_MIN_PER_PROCESS = 16

#: Seconds between a worker process's checks that its parent is still alive.
PARENT_CHECK_SECONDS = 1.0


class ObfuscatorSource:
    """Computes fresh obfuscators for one public key in the calling thread.

    For a DJN key the fixed-base table is built on first use, or by
    :meth:`prepare`. It is shared by the threads that use this source.
    """

    def __init__(
        self,
        public_key: PublicKey,
        obfuscator_bits: int | None = None,
        window_bits: int = DEFAULT_WINDOW_BITS,
    ) -> None:
        self.public_key = public_key
        self.obfuscator_bits = public_key.resolve_obfuscator_bits(obfuscator_bits)
        self.window_bits = window_bits
        self._table: FixedBaseTable | None = None
        self._table_lock = threading.Lock()

    def prepare(self) -> None:
        """Build the fixed-base table now, if the key is a DJN key and it is not built yet."""
        if self.public_key.hs is not None:
            self._djn_table()

    def _djn_table(self) -> FixedBaseTable:
        with self._table_lock:
            if self._table is None:
                hs = self.public_key.hs
                assert hs is not None
                self._table = FixedBaseTable(
                    hs, self.public_key.nsquare, self.obfuscator_bits, self.window_bits
                )
            return self._table

    def compute(self, count: int) -> list[_gmp.Mpz]:
        """Return ``count`` fresh obfuscators, using the fixed-base table for a DJN key."""
        if self.public_key.hs is None:
            return self._plain(count)
        table = self._djn_table()
        return [table.power(draw_djn_exponent(self.obfuscator_bits)) for _ in range(count)]

    def compute_without_gil(self, count: int) -> list[_gmp.Mpz]:
        """Return ``count`` fresh obfuscators from gmpy2 list calls that release the GIL.

        Slower per obfuscator than :meth:`compute` for a DJN key, because
        every exponentiation starts from scratch, but it runs in parallel
        with the thread that serves the event loop.
        """
        key = self.public_key
        if key.hs is None:
            return self._plain(count)
        exponents = [draw_djn_exponent(self.obfuscator_bits) for _ in range(count)]
        return _gmp.powmod_exp_list(key.hs, exponents, key.nsquare)

    def _plain(self, count: int) -> list[_gmp.Mpz]:
        key = self.public_key
        bases = [_gmp.random_unit(key.n) for _ in range(count)]
        return _gmp.powmod_base_list(bases, key.n, key.nsquare)


@lru_cache(maxsize=4)
def shared_source(public_key: PublicKey) -> ObfuscatorSource:
    """Return a process-wide :class:`ObfuscatorSource` with default settings for ``public_key``.

    :func:`~gradchain.crypto.vector.encrypt_vector` uses it when no pool is
    given, so the fixed-base table is built once per key, not once per call.
    The four most recent keys keep their tables.
    """
    return ObfuscatorSource(public_key)


@lru_cache(maxsize=4)
def _pool_source(
    public_key: PublicKey, obfuscator_bits: int | None, window_bits: int
) -> ObfuscatorSource:
    """Return the process-wide source that pools with these settings share; the table is read-only once built."""
    return ObfuscatorSource(public_key, obfuscator_bits, window_bits)


@dataclass(frozen=True, kw_only=True)
class ObfuscatorStats:
    """Counters of one :class:`ObfuscatorPool` since it was created."""

    taken_from_pool: int
    """Obfuscators handed out from the precomputed pool."""
    computed_on_the_spot: int
    """Obfuscators computed during :meth:`ObfuscatorPool.take` because the pool ran dry."""
    available: int
    """Obfuscators in the pool now."""
    failed_batches: int
    """Background batches that raised. The pool stops filling after the first one."""


class ObfuscatorPool:
    """Precomputed obfuscators for one public key, refilled in the background.

    ``size`` is the number of obfuscators the pool keeps ready, and 0 turns
    precomputation off. ``processes`` is the number of worker processes that
    fill it: None means ``os.cpu_count()``, and 0 means one background
    thread that uses GIL-releasing gmpy2 calls. ``obfuscator_bits`` is the
    DJN exponent length (see :meth:`PublicKey.resolve_obfuscator_bits`).

    Use it as a context manager, or call :meth:`start` and :meth:`close`.
    :meth:`close` stops the filler and waits for the worker processes to
    exit. A worker process also exits by itself within
    :data:`PARENT_CHECK_SECONDS` of its parent's death. :meth:`take` works
    before :meth:`start`, computing everything on the spot.

    Raises ValueError for invalid arguments.
    """

    def __init__(
        self,
        public_key: PublicKey,
        *,
        size: int,
        obfuscator_bits: int | None = None,
        processes: int | None = None,
        window_bits: int = DEFAULT_WINDOW_BITS,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be an integer >= 0, got {size!r}")
        if processes is None:
            processes = os.cpu_count() or 1
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 0:
            raise ValueError(f"processes must be an integer >= 0 or None, got {processes!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")

        self.public_key = public_key
        self.size = size
        self.processes = processes
        self.batch_size = batch_size
        # Pools of one key in one process, such as many nodes hosted by
        # ``gradchain swarm``, share one fixed-base table (5.5 MB for a 2048-bit key).
        self._source = _pool_source(public_key, obfuscator_bits, window_bits)
        self.obfuscator_bits = self._source.obfuscator_bits

        self._ready: deque[_gmp.Mpz] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = "new"
        self._taken_from_pool = 0
        self._computed_on_the_spot = 0
        self._failed_batches = 0
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._filler: threading.Thread | None = None

    def __repr__(self) -> str:
        return (
            f"ObfuscatorPool(key={self.public_key.fingerprint}, size={self.size}, "
            f"processes={self.processes}, state={self._state})"
        )

    def __enter__(self) -> ObfuscatorPool:
        if self._state == "new":
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> ObfuscatorPool:
        """Start the worker processes or thread and begin filling the pool in the background.

        Raises RuntimeError when the pool was started or closed before.
        """
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"cannot start an obfuscator pool that is {self._state}")
            self._state = "running"
        if self.processes > 0:
            key = self.public_key
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(
                    key.n,
                    key.hs,
                    self.obfuscator_bits,
                    self._source.window_bits,
                    os.getpid(),
                ),
            )
        self._filler = threading.Thread(
            target=self._fill,
            name=f"gradchain-obfuscators-{self.public_key.fingerprint}",
            daemon=True,
        )
        self._filler.start()
        logger.debug("started %r", self)
        return self

    def close(self) -> None:
        """Stop filling, drop the unused obfuscators and wait for the workers to exit.

        Calling it again does nothing.
        """
        with self._changed:
            if self._state == "closed":
                return
            self._state = "closed"
            self._ready.clear()
            self._changed.notify_all()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._filler is not None:
            self._filler.join()
        logger.debug("closed %r: %s", self, self.stats())

    def stats(self) -> ObfuscatorStats:
        """Return the pool's counters."""
        with self._lock:
            return ObfuscatorStats(
                taken_from_pool=self._taken_from_pool,
                computed_on_the_spot=self._computed_on_the_spot,
                available=len(self._ready),
                failed_batches=self._failed_batches,
            )

    @property
    def available(self) -> int:
        """Number of obfuscators ready now."""
        with self._lock:
            return len(self._ready)

    def wait_until_full(self, timeout: float | None = None) -> bool:
        """Block until the pool holds ``size`` obfuscators, and return whether it does.

        Returns False after ``timeout`` seconds, or at once when the pool is not
        running or has stopped filling after an error.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while len(self._ready) < self.size:
                if self._state != "running" or self._failed_batches:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def take(self, count: int) -> list[_gmp.Mpz]:
        """Remove and return ``count`` obfuscators, computing on the spot what the pool lacks.

        Every obfuscator is handed out once: pool entries leave the pool under
        a lock, and the ones computed on the spot are fresh. The result contains
        ``mpz`` values for :meth:`PublicKey.raw_encrypt_with_obfuscator`.

        Raises RuntimeError after :meth:`close`, and ValueError for a negative count.
        """
        if count < 0:
            raise ValueError(f"count must be non-negative, got {count}")
        with self._changed:
            if self._state == "closed":
                raise RuntimeError("cannot take obfuscators from a closed pool")
            taken = [self._ready.popleft() for _ in range(min(count, len(self._ready)))]
            self._taken_from_pool += len(taken)
            self._changed.notify_all()

        missing = count - len(taken)
        if missing == 0:
            return taken
        fresh = self._compute_on_the_spot(missing)
        with self._lock:
            self._computed_on_the_spot += missing
        return taken + fresh

    def _compute_on_the_spot(self, count: int) -> list[_gmp.Mpz]:
        executor = self._executor
        parts = min(self.processes, count // PARALLEL_MIN_PER_PROCESS)
        if executor is None or parts < 2:
            return self._source.compute(count)
        try:
            futures = [executor.submit(_compute_in_worker, part) for part in _split(count, parts)]
            return [_gmp.to_mpz(value) for future in futures for value in future.result()]
        except (BrokenProcessPool, RuntimeError, concurrent.futures.CancelledError) as error:
            # RuntimeError means the executor is shutting down. The caller
            # still gets its obfuscators, computed in this thread.
            logger.warning(
                "worker processes failed (%r), computing %d obfuscators here", error, count
            )
            return self._source.compute(count)

    def _fill(self) -> None:
        """Keep the pool at ``size`` obfuscators until it closes or a batch fails."""
        if self._executor is None:
            _lower_thread_priority()
        try:
            self._source.prepare()
            while True:
                with self._changed:
                    while self._state == "running" and len(self._ready) >= self.size:
                        self._changed.wait()
                    if self._state != "running":
                        return
                    missing = self.size - len(self._ready)
                batches = self._next_batches(missing)
                for batch in batches:
                    values = batch()
                    with self._changed:
                        if self._state != "running":
                            return
                        self._ready.extend(values)
                        self._changed.notify_all()
        except concurrent.futures.CancelledError:
            return
        except Exception as error:
            with self._changed:
                if self._state != "running":
                    return
                self._failed_batches += 1
                self._changed.notify_all()
            logger.error(
                "obfuscator pool for key %s stopped filling after an error: %r; "
                "encryption continues with obfuscators computed on the spot",
                self.public_key.fingerprint,
                error,
            )

    def _next_batches(self, missing: int) -> list[Callable[[], list[_gmp.Mpz]]]:
        """Start computing up to one batch per worker and return functions that wait for them."""
        executor = self._executor
        if executor is None:
            count = min(missing, self.batch_size)
            return [lambda: self._source.compute_without_gil(count)]
        parts = max(1, min(self.processes, -(-missing // self.batch_size)))
        sizes = _split(min(missing, parts * self.batch_size), parts)
        futures = [executor.submit(_compute_in_worker, size) for size in sizes]
        return [partial(_converted_result, future) for future in futures]


#: Nice value of a pool's filling thread. Refilling is background work, so
#: the round's own work (the event loop, decryption) runs first on a busy CPU.
FILL_THREAD_NICENESS = 19


def _lower_thread_priority() -> None:
    """Give the calling thread the lowest CPU priority, where the platform allows it per thread.

    Linux schedules each thread on its own, so setpriority on the thread's
    native id affects only this thread. Elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), FILL_THREAD_NICENESS)
    except OSError as error:
        logger.debug("could not lower the priority of the obfuscator thread: %s", error)


def _converted_result(future: concurrent.futures.Future[list[int]]) -> list[_gmp.Mpz]:
    """Wait for a worker's batch and convert its ints to ``mpz``."""
    return [_gmp.to_mpz(value) for value in future.result()]


def _split(count: int, parts: int) -> list[int]:
    """Split ``count`` into ``parts`` sizes that differ by at most one, leaving out zeros."""
    base, extra = divmod(count, parts)
    sizes = [base + (1 if index < extra else 0) for index in range(parts)]
    return [size for size in sizes if size > 0]


# State of a worker process. Each worker serves one pool, so one source suffices.
_worker_source: ObfuscatorSource | None = None


def _start_worker(
    n: int, hs: int | None, obfuscator_bits: int, window_bits: int, parent_pid: int
) -> None:
    """Initialise a worker process: build its source and watch its parent."""
    global _worker_source
    # Ctrl-C in a terminal reaches every process of the group. The parent
    # handles it and closes the pool, so the workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_source = ObfuscatorSource(PublicKey(n=n, hs=hs), obfuscator_bits, window_bits)
    _worker_source.prepare()
    watchdog = threading.Thread(
        target=_exit_when_orphaned, args=(parent_pid,), name="parent-watchdog", daemon=True
    )
    watchdog.start()


def _exit_when_orphaned(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(0)


def _compute_in_worker(count: int) -> list[int]:
    """Compute ``count`` obfuscators in a worker process and return them as ints for pickling."""
    assert _worker_source is not None, "worker process was not initialised"
    return [int(value) for value in _worker_source.compute(count)]
