"""The load client: many coroutines posting messages to randomly chosen replicas.

Each of ``coroutines`` coroutines sends ``requests`` posts one after another,
each to a replica URL and as a sender drawn at random (ten names by default),
with a text unique to the run, so that each answer can be matched to its
request. Answers are kept as raw bytes while the clock runs and decoded into
:class:`~skns.messenger.rules.Answer` afterwards: the client spends its CPU on
sending, which is what is being measured.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import random
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp
import orjson

from .rules import Answer, Message

NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
HEADERS = {"Content-Type": "application/json"}


@dataclasses.dataclass
class LoadResult:
    elapsed: float  # seconds from the first request to the last answer
    latencies: list[float]  # seconds, one per request that got an HTTP answer
    raw: list[tuple[str, str, bytes]]  # sender, text, body of every 200
    errors: Counter[str]  # by kind: "HTTP 503", "ClientConnectorError", ...

    @property
    def requests(self) -> int:
        return len(self.raw) + sum(self.errors.values())

    @property
    def ok(self) -> int:
        return len(self.raw)

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]

    @property
    def mean(self) -> float:
        return sum(self.latencies) / len(self.latencies) if self.latencies else math.nan

    def answers(self) -> list[Answer]:
        """Decode every 200 (after the run: not on the clock)."""
        out = []
        for sender, text, body in self.raw:
            messages = tuple(Message.from_json(m) for m in orjson.loads(body)["messages"])
            out.append(Answer(sender, text, messages))
        return out


class Load:
    """One run; ``done`` counts finished requests while it runs (for a progress bar)."""

    def __init__(
        self,
        urls: Sequence[str],
        coroutines: int = 50,
        requests: int = 100,
        senders: Sequence[str] = NAMES,
        timeout: float = 30.0,
        seed: int | None = None,
    ) -> None:
        if not urls:
            raise ValueError("no replica URLs")
        self.urls = [u.rstrip("/") + "/messages" for u in urls]
        self.coroutines = coroutines
        self.requests = requests
        self.senders = list(senders)
        self.timeout = timeout
        self.random = random.Random(seed)
        self.tag = os.urandom(4).hex()  # keeps texts unique across runs on one database
        self.total = coroutines * requests
        self.done = 0

    async def run(self) -> LoadResult:
        latencies: list[float] = []
        raw: list[tuple[str, str, bytes]] = []
        errors: Counter[str] = Counter()
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        clock = time.perf_counter
        choice = self.random.choice
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, trust_env=False
        ) as session:

            async def worker(w: int) -> None:
                for i in range(self.requests):
                    url = choice(self.urls)
                    sender = choice(self.senders)
                    text = f"{self.tag} {w}.{i}"
                    payload = orjson.dumps({"sender": sender, "text": text})
                    started = clock()
                    try:
                        async with session.post(url, data=payload, headers=HEADERS) as response:
                            body = await response.read()
                            status = response.status
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        errors[type(exc).__name__] += 1
                    else:
                        latencies.append(clock() - started)
                        if status == 200:
                            raw.append((sender, text, body))
                        else:
                            errors[f"HTTP {status}"] += 1
                    self.done += 1

            started = clock()
            await asyncio.gather(*(worker(w) for w in range(self.coroutines)))
            elapsed = clock() - started
        return LoadResult(elapsed, latencies, raw, errors)
