"""The peer clients batch-cancel is measured against, each run as its own process.

    python benchmarks/clients.py aiohttp    URL CSV CONCURRENCY   # thinnest asyncio loop
    python benchmarks/clients.py requests   URL CSV LIMIT         # sequential requests.Session
    python benchmarks/clients.py background URL INFLIGHT OUT.json # same-tenant neighbour

Each one fetches a token once, sends no retries and writes no report: they are the floor of
what any client must spend, not tools. The first two print one JSON line on stdout with the
rows sent, the statuses seen and their own elapsed time (token fetch excluded). The background
client keeps INFLIGHT GETs of ``/v1/invoices/BG-n`` in flight until SIGTERM, then writes every
(finish monotonic time, status) it saw to OUT.json.
"""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path

FORM = {
    "client_id": "sim-client-id",
    "client_secret": "sim-client-secret",
    "grant_type": "client_credentials",
}
BODY = '{"reason": "02"}'


def keys(path: str, limit: int | None = None) -> list[str]:
    """Invoice keys from the first column of the benchmark CSV (header skipped)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        out = [row[0] for row in reader]
    return out if limit is None else out[:limit]


async def raw_aiohttp(url: str, path: str, concurrency: int) -> dict[str, object]:
    import aiohttp

    todo = keys(path)
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(f"{url}/oauth/token", data=FORM) as response:
            token = (await response.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        semaphore = asyncio.Semaphore(concurrency)

        async def one(key: str) -> None:
            async with semaphore:
                target = f"{url}/v1/invoices/{key}/e-invoice/cancel"
                async with session.put(target, data=BODY, headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1

        started = time.monotonic()
        await asyncio.gather(*(one(key) for key in todo))
        elapsed = time.monotonic() - started
    return {"rows": len(todo), "statuses": dict(statuses), "elapsed": elapsed}


def raw_requests(url: str, path: str, limit: int) -> dict[str, object]:
    import requests

    todo = keys(path, limit)
    statuses: Counter[int] = Counter()
    with requests.Session() as session:
        token = session.post(f"{url}/oauth/token", data=FORM).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        started = time.monotonic()
        for key in todo:
            response = session.put(f"{url}/v1/invoices/{key}/e-invoice/cancel", data=BODY,
                                   headers=headers)
            statuses[response.status_code] += 1
        elapsed = time.monotonic() - started
    return {"rows": len(todo), "statuses": dict(statuses), "elapsed": elapsed}


async def background(url: str, inflight: int, out: str) -> None:
    import aiohttp

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    seen: list[tuple[float, int]] = []
    counter = iter(range(10**12))
    connector = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(f"{url}/oauth/token", data=FORM) as response:
            token = (await response.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        async def worker() -> None:
            while not stop.is_set():
                target = f"{url}/v1/invoices/BG-{next(counter)}"
                try:
                    async with session.get(target, headers=headers) as response:
                        await response.read()
                        seen.append((time.monotonic(), response.status))
                except aiohttp.ClientError:
                    seen.append((time.monotonic(), 0))

        print("background running", flush=True)
        workers = [asyncio.create_task(worker()) for _ in range(inflight)]
        await stop.wait()
        await asyncio.gather(*workers, return_exceptions=True)
    Path(out).write_text(json.dumps(seen), encoding="utf-8")  # noqa: ASYNC240 - once, at the end


def main() -> None:
    kind, url = sys.argv[1], sys.argv[2]
    if kind == "aiohttp":
        print(json.dumps(asyncio.run(raw_aiohttp(url, sys.argv[3], int(sys.argv[4])))))
    elif kind == "requests":
        print(json.dumps(raw_requests(url, sys.argv[3], int(sys.argv[4]))))
    elif kind == "background":
        asyncio.run(background(url, int(sys.argv[3]), sys.argv[4]))
    else:
        raise SystemExit(f"unknown client {kind!r}")


if __name__ == "__main__":
    main()
