"""A lean closed-loop HTTP/1.1 load client on asyncio streams (no HTTP library).

Each simulated client holds one keep-alive connection and sends the same POST again as soon as
the previous answer arrived. A general-purpose client (httpx) spends ~1 ms of CPU per request:
on a machine the client shares with the servers that capped a trivial uvicorn app at ~440
requests/s at 32 clients, where this client reaches ~7,000. It understands what the servers
measured here send back: Content-Length or chunked bodies, and connections the server closes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def fail(self, why: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or why


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server keeps the connection."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length: int | None = None
    chunked = False
    keep = True
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep = False
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()  # no length: the body runs to the end of the connection
        keep = False
    return status, keep


async def _client(host: str, port: int, request: bytes, until: float, tally: Tally) -> None:
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.perf_counter() < until:
        start = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, port)
            reader, writer = conn
            writer.write(request)
            status, keep = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            tally.fail(f"{type(e).__name__}: {e}")
            if conn is not None:
                conn[1].close()
            conn = None
            await asyncio.sleep(0.01)
            continue
        if status == 200:
            tally.latencies_s.append(time.perf_counter() - start)
        else:
            tally.fail(f"HTTP {status}")
        if not keep:
            writer.close()
            conn = None
    if conn is not None:
        conn[1].close()


def post_request(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """The raw bytes of a POST of ``body`` (JSON) to ``url``."""
    parts = urlsplit(url)
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.hostname}:{parts.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _run(url: str, body: bytes, concurrency: int, seconds: float) -> tuple[Tally, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = post_request(url, body)
    warm = Tally()
    await _client(host, port, request, time.perf_counter() + 0.5, warm)  # connections, caches
    tally = Tally()
    start = time.perf_counter()
    until = start + seconds
    await asyncio.gather(*[_client(host, port, request, until, tally) for _ in range(concurrency)])
    return tally, time.perf_counter() - start


def measure(url: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float | str]:
    """Closed-loop load at ``concurrency`` clients for ``seconds``: req/s, p50/p99 ms, errors."""
    tally, elapsed = asyncio.run(_run(url, body, concurrency, seconds))
    ms = np.asarray(tally.latencies_s) * 1000
    return {
        "rps": len(ms) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "requests": len(ms),
        "errors": tally.errors,
        "first_error": tally.first_error,
    }
