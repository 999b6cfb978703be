"""Synthetic LLM-usage events for the benchmarks: deterministic, skewed like real customers (Zipf).

Every benchmark (meterd and the PostgreSQL baseline) draws the same events from the same seed."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b", "text-embedding-3-small"]
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
EVENT_TYPE = "litellm_tokens"


def subjects(customers: int) -> list[str]:
    return [f"customer-{i:05d}" for i in range(customers)]


def zipf_weights(customers: int, s: float = 1.1) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, customers + 1)))


def events(total: int, customers: int = 10_000, seed: int = 7, chunk: int = 1000) -> Iterator[list[dict]]:
    """`total` events in chunks, spread evenly over October 2026 (UTC), customer ranks Zipf-distributed."""
    rng = random.Random(seed)
    names = subjects(customers)
    cum = zipf_weights(customers)
    span_us = int((END - START).total_seconds() * 1_000_000)
    start_us = int(START.timestamp() * 1_000_000)
    made = 0
    while made < total:
        n = min(chunk, total - made)
        who = rng.choices(names, cum_weights=cum, k=n)
        batch = []
        for i in range(n):
            seq = made + i
            prompt = rng.randint(5, 4000)
            completion = rng.randint(1, 1000)
            t_us = start_us + (seq * span_us) // total + rng.randint(0, 999)
            batch.append(
                {
                    "specversion": "1.0",
                    "type": EVENT_TYPE,
                    "id": f"ev-{seed}-{seq}",
                    "source": "bench",
                    "subject": who[i],
                    "time": datetime.fromtimestamp(t_us / 1_000_000, UTC).isoformat(),
                    "data": {
                        "model": MODELS[rng.randrange(len(MODELS))],
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                        "cost": round((prompt + completion) * 1.5e-7, 9),
                    },
                }
            )
        made += n
        yield batch


TOP_CUSTOMER = "customer-00000"  # the heaviest customer under Zipf: the worst case for one-customer queries
