"""What glibc's malloc holds after Valkey frees many small values: RSS beyond used_memory.

    GLIBC_TUNABLES= .venv/bin/python bench/valkey_malloc_churn.py          # glibc's defaults
    .venv/bin/python bench/valkey_malloc_churn.py                          # dmhub's tuning
    GLIBC_TUNABLES=glibc.malloc.tcache_count=1000 .venv/bin/python bench/valkey_malloc_churn.py

Starts a Valkey as `dmhub serve` does (EmbeddedValkey: dmhub's
EMBEDDED_VALKEY_GLIBC_TUNABLES unless GLIBC_TUNABLES is set), sets COUNT values
of 1-999 bytes (every size glibc's per-thread cache keeps), deletes them with
DEL (freed by Valkey's main thread), sets them again, drops them with
FLUSHALL ASYNC (freed by the lazy-free thread) and sets them once more,
printing used_memory and used_memory_rss after each step. A worst case for
the per-thread cache: what it keeps is the last line's RSS beyond used_memory,
against the defaults'.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from chat.store.embedded import EmbeddedValkey, glibc_tunables_of

BATCH = 2000
MAX_VALUE = 1000


def memory(client: redis.Redis) -> str:
    info = client.info("memory")
    used, rss = info["used_memory"] / 2**20, info["used_memory_rss"] / 2**20
    return f"used_memory {used:6.1f} MiB, rss {rss:6.1f} MiB, rss beyond used {rss - used:5.1f}"


def fill(client: redis.Redis, tag: str, count: int) -> None:
    sizes = random.Random(1)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.set(f"{tag}:{i}", "x" * sizes.randrange(1, MAX_VALUE))
        if i % BATCH == BATCH - 1:
            pipe.execute()
    pipe.execute()


def delete(client: redis.Redis, tag: str, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.delete(f"{tag}:{i}")
        if i % BATCH == BATCH - 1:
            pipe.execute()
    pipe.execute()


def main(count: int) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedValkey(Path(tmp), "everysec", lock=False) as valkey,
    ):
        assert valkey.pid is not None
        client = redis.Redis.from_url(valkey.url)
        print(f"GLIBC_TUNABLES {glibc_tunables_of(valkey.pid)!r}, {count:,} values")
        print(f"  at start             {memory(client)}")
        fill(client, "a", count)
        print(f"  set                  {memory(client)}")
        delete(client, "a", count)
        time.sleep(1)
        print(f"  DEL (main thread)    {memory(client)}")
        fill(client, "b", count)
        print(f"  set again            {memory(client)}")
        client.flushall(asynchronous=True)
        time.sleep(3)  # the lazy-free thread
        print(f"  FLUSHALL ASYNC       {memory(client)}")
        fill(client, "c", count)
        print(f"  set again            {memory(client)}")
        client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    main(parser.parse_args().count)
