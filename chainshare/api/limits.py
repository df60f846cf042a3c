"""What one API request, one JSON-RPC batch and one client may cost the node.

- ``WorkBudget``: the work of one HTTP body (a JSON-RPC request or batch, or a REST call): blocks
  loaded, logs returned, call gas burnt, response bytes. A charge past the request's or the
  batch's allowance raises ``LimitExceeded`` naming the setting, before the work is done.
- ``Bucket`` / ``refill_bucket``: a per-client token bucket of API CPU milliseconds (pure).
- ``ClientLimiter``: each client's bucket and requests in flight (used from the event loop only).
- ``ApiWorkers``: the threads API work runs on, off the event loop that runs consensus, with a
  bounded queue; each job's thread CPU time is measured and charged to its client.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from chainshare.config import ApiSection
from chainshare.errors import LimitExceeded, RateLimited

_T = TypeVar("_T")
MAX_CLIENTS = 10_000  # clients whose buckets are remembered (least recently seen idle ones are forgotten)


@dataclass(frozen=True)
class ApiLimits:
    """The API budgets of a node, from its ``[api]`` config section."""

    max_batch: int = 1_000
    max_request_blocks: int = 10_000
    max_batch_blocks: int = 10_000
    max_request_logs: int = 10_000
    max_batch_logs: int = 10_000
    max_response_bytes: int = 16 * 1024 * 1024
    max_batch_call_gas: int = 120_000_000

    @classmethod
    def from_config(cls, api: ApiSection) -> ApiLimits:
        return cls(api.max_batch, api.max_request_blocks, api.max_batch_blocks, api.max_request_logs,
                   api.max_batch_logs, api.max_response_bytes, api.max_batch_call_gas)


def _limit(message: str, setting: str, value: int) -> LimitExceeded:
    return LimitExceeded(f"limit exceeded: {message} (api.{setting} = {value})",
                         data={"limit": setting, "max": value})


class WorkBudget:
    """The work one HTTP body has done so far; ``start_request`` opens the next request of a batch.

    Guarantees: no request loads more than ``max_request_blocks`` blocks or returns more than
    ``max_request_logs`` logs, a batch no more than ``max_batch_*`` together, and no call runs with
    more gas than the block gas limit or than what is left of ``max_batch_call_gas``."""

    def __init__(self, limits: ApiLimits) -> None:
        self.limits = limits
        self.blocks = 0
        self.logs = 0
        self.call_gas = 0
        self.response_bytes = 0
        self._request_blocks = 0
        self._request_logs = 0

    def start_request(self) -> None:
        self._request_blocks = 0
        self._request_logs = 0

    def check_blocks(self, n: int, what: str) -> None:
        """Raise as ``charge_blocks`` would, without charging."""
        self.charge_blocks(n, what)
        self._request_blocks -= n
        self.blocks -= n

    def charge_blocks(self, n: int, what: str) -> None:
        """Account for ``n`` more blocks to load for ``what``; raises before the work if over."""
        lim = self.limits
        if self._request_blocks + n > lim.max_request_blocks:
            raise _limit(f"{what} would load more than {lim.max_request_blocks} blocks; narrow the block range "
                         "or filter by address or topic", "max_request_blocks", lim.max_request_blocks)
        if self.blocks + n > lim.max_batch_blocks:
            raise _limit(f"this batch would load more than {lim.max_batch_blocks} blocks; send the rest in "
                         "another batch", "max_batch_blocks", lim.max_batch_blocks)
        self._request_blocks += n
        self.blocks += n

    def charge_logs(self, n: int, what: str) -> None:
        lim = self.limits
        if self._request_logs + n > lim.max_request_logs:
            raise _limit(f"{what} matches more than {lim.max_request_logs} logs; narrow the block range or the "
                         "filter", "max_request_logs", lim.max_request_logs)
        if self.logs + n > lim.max_batch_logs:
            raise _limit(f"this batch would return more than {lim.max_batch_logs} logs; send the rest in "
                         "another batch", "max_batch_logs", lim.max_batch_logs)
        self._request_logs += n
        self.logs += n

    def grant_call_gas(self, requested: int | None, block_gas_limit: int) -> int:
        """Gas a call may run with: what it asks (default: the block gas limit), at most the block gas
        limit and what is left of the batch's call gas; raises when nothing is left."""
        left = self.limits.max_batch_call_gas - self.call_gas
        if left <= 0:
            raise _limit(f"the calls of this batch burnt {self.call_gas} gas", "max_batch_call_gas",
                         self.limits.max_batch_call_gas)
        return min(requested or block_gas_limit, block_gas_limit, left)

    def is_call_gas_short(self, granted: int, requested: int | None, block_gas_limit: int) -> bool:
        """True if a call granted ``granted`` gas got less than it asked only because of the batch budget."""
        return granted < min(requested or block_gas_limit, block_gas_limit)

    def charge_call_gas(self, used: int) -> None:
        self.call_gas += used

    def call_gas_exhausted(self) -> LimitExceeded:
        return _limit("the calls of this batch ran out of their gas budget; send the rest in another batch",
                      "max_batch_call_gas", self.limits.max_batch_call_gas)

    def fits_response(self, n: int) -> bool:
        return self.response_bytes + n <= self.limits.max_response_bytes

    def charge_response(self, n: int) -> None:
        self.response_bytes += n

    def response_full(self) -> LimitExceeded:
        return _limit(f"the response would exceed {self.limits.max_response_bytes} bytes; send the rest in "
                      "another batch or narrow the request", "max_response_bytes", self.limits.max_response_bytes)


# -- per-client rate limit ------------------------------------------------------------------------

@dataclass(frozen=True)
class Bucket:
    """A client's allowance of API CPU time: ``level_ms`` may go negative (debt) by the cost of the
    requests it had in flight; no request is admitted until it is positive again."""

    level_ms: float
    at: float  # monotonic seconds of ``level_ms``


def refill_bucket(bucket: Bucket, now: float, rate_ms_per_s: float, burst_ms: float) -> Bucket:
    """The bucket at ``now``: refilled at ``rate_ms_per_s``, never above ``burst_ms``."""
    if now <= bucket.at:
        return bucket
    return Bucket(min(burst_ms, bucket.level_ms + (now - bucket.at) * rate_ms_per_s), now)


def compute_retry_after(bucket: Bucket, rate_ms_per_s: float) -> float:
    """Seconds until an empty or indebted bucket is positive again."""
    return max(0.0, -bucket.level_ms) / rate_ms_per_s + 0.05


@dataclass
class _Client:
    bucket: Bucket
    inflight: int = 0


class ClientLimiter:
    """Per-client token buckets of API CPU time and in-flight counts. Event-loop thread only."""

    def __init__(self, rate_ms_per_s: int, burst_ms: int, max_inflight: int, max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate_ms_per_s)
        self.burst = float(burst_ms)
        self.max_inflight = max_inflight
        self.max_clients = max_clients
        self.clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self.refused: dict[str, int] = {}

    def admit(self, client: str) -> None:
        """Let a request of ``client`` in (counted in flight until ``release``), or raise RateLimited."""
        now = self.clock()
        entry = self._clients.get(client)
        if entry is None:
            entry = self._clients[client] = _Client(Bucket(self.burst, now))
            self._forget_idle()
        else:
            self._clients.move_to_end(client)
        if self.rate:
            entry.bucket = refill_bucket(entry.bucket, now, self.rate, self.burst)
            if entry.bucket.level_ms <= 0:
                wait = compute_retry_after(entry.bucket, self.rate)
                self._count("rate_limit_cpu_ms")
                raise RateLimited(
                    f"rate limit exceeded: client {client} used its share of the node's API time "
                    f"(api.rate_limit_cpu_ms = {int(self.rate)} ms per second, burst {int(self.burst)} ms); "
                    f"retry in {wait:.1f} s", data={"limit": "rate_limit_cpu_ms", "retryAfter": round(wait, 2)})
        if entry.inflight >= self.max_inflight:
            self._count("max_inflight_per_client")
            raise RateLimited(f"rate limit exceeded: client {client} has {entry.inflight} requests in flight "
                              f"(api.max_inflight_per_client = {self.max_inflight}); wait for their answers",
                              data={"limit": "max_inflight_per_client", "retryAfter": 0.1})
        entry.inflight += 1

    def release(self, client: str, cpu_ms: float) -> None:
        """A request of ``client`` is answered: it cost ``cpu_ms`` of API CPU time."""
        entry = self._clients.get(client)
        if entry is None:
            return
        entry.inflight = max(0, entry.inflight - 1)
        if self.rate:
            b = refill_bucket(entry.bucket, self.clock(), self.rate, self.burst)
            entry.bucket = Bucket(b.level_ms - cpu_ms, b.at)

    def _forget_idle(self) -> None:
        if len(self._clients) <= self.max_clients:
            return
        for name in list(self._clients)[: len(self._clients) - self.max_clients]:
            if self._clients[name].inflight == 0:
                del self._clients[name]

    def _count(self, limit: str) -> None:
        self.refused[limit] = self.refused.get(limit, 0) + 1


# -- worker threads -------------------------------------------------------------------------------

class Usage:
    """The client an HTTP request is charged to, and the API CPU time spent for it so far."""

    __slots__ = ("client", "cpu_ms")

    def __init__(self, client: str = "") -> None:
        self.client = client
        self.cpu_ms = 0.0


current_usage: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("chainshare_api_usage", default=None)


def _timed(fn: Callable[..., _T], args: tuple[Any, ...]) -> tuple[_T | None, BaseException | None, float]:
    t0 = time.thread_time()
    try:
        result, error = fn(*args), None
    except BaseException as exc:  # handed back to the awaiting request, after its cost is counted
        result, error = None, exc
    return result, error, (time.thread_time() - t0) * 1000


class ApiWorkers:
    """Runs API work on ``workers`` threads, off the event loop. Jobs wait in one queue per client and
    start round-robin over the clients, so a client with many jobs delays another's by at most one job
    per thread; beyond ``max_queued`` jobs, RateLimited (busy). With ``cpu_ms_per_s``, jobs start only
    while the pool's own bucket of CPU time is positive: all clients together never take more than
    that share of a core from consensus (a burst of one second's worth). Each job's thread CPU time
    is added to the calling request's ``current_usage``. Event-loop thread only."""

    def __init__(self, workers: int, max_queued: int, name: str = "api", cpu_ms_per_s: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self.workers = workers
        self.max_queued = max_queued
        self.cpu_rate = float(cpu_ms_per_s)
        self.clock = clock
        self._bucket = Bucket(self.cpu_rate, clock())
        self.running = 0
        self.pending = 0  # jobs running or waiting
        self.busy_refusals = 0
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self.pending >= self.max_queued:
            self.busy_refusals += 1
            raise RateLimited(f"node busy: {self.pending} API requests are queued (api.max_queued = "
                              f"{self.max_queued}); retry shortly", data={"limit": "max_queued", "retryAfter": 1})
        usage = current_usage.get()
        self.pending += 1
        try:
            await self._take_slot(usage.client if usage is not None else "")
            try:
                await self._wait_for_cpu_share()
                result, error, cpu_ms = await asyncio.get_running_loop().run_in_executor(
                    self._pool, _timed, fn, args)
                if self.cpu_rate:
                    b = refill_bucket(self._bucket, self.clock(), self.cpu_rate, self.cpu_rate)
                    self._bucket = Bucket(b.level_ms - cpu_ms, b.at)
            finally:
                self._release_slot()
        finally:
            self.pending -= 1
        if usage is not None:
            usage.cpu_ms += cpu_ms
        if error is not None:
            raise error
        return result  # type: ignore[return-value]

    async def _wait_for_cpu_share(self) -> None:
        while self.cpu_rate:
            self._bucket = refill_bucket(self._bucket, self.clock(), self.cpu_rate, self.cpu_rate)
            if self._bucket.level_ms > 0:
                return
            await asyncio.sleep(compute_retry_after(self._bucket, self.cpu_rate))

    async def _take_slot(self, client: str) -> None:
        if self.running < self.workers and not self._waiting:
            self.running += 1
            return
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, deque()).append(gate)
        try:
            await gate  # resolved by _release_slot, which hands its slot over
        except asyncio.CancelledError:
            if gate.done() and not gate.cancelled():
                self._release_slot()  # the slot was ours already: pass it on
            else:
                queue = self._waiting.get(client)
                if queue is not None and gate in queue:
                    queue.remove(gate)
                    if not queue:
                        del self._waiting[client]
            raise

    def _release_slot(self) -> None:
        while self._waiting:
            client, queue = next(iter(self._waiting.items()))
            gate = queue.popleft()
            if queue:
                self._waiting.move_to_end(client)  # this client's next job waits for the others' turn
            else:
                del self._waiting[client]
            if not gate.done():
                gate.set_result(None)
                return
        self.running -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
