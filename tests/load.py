"""Steady client load for serving tests: threads that keep calling an endpoint while the test
changes what serves it (a version switch, a promote), and the checks such a switch must pass."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

Call = tuple[int, int | None]  # HTTP status (0: no response), the version that answered


def calls_during(
    url: str,
    body: dict,
    action: Callable[[], object] = lambda: None,
    clients: int = 4,
    before_s: float = 1.0,
    after_s: float = 2.0,
) -> list[Call]:
    """Every POST of ``body`` to ``url`` made by ``clients`` threads from ``before_s`` before
    ``action`` until ``after_s`` after it returned, in the order the answers came."""
    calls: list[Call] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post(url, json=body)
                except httpx.HTTPError:
                    calls.append((0, None))
                    continue
                calls.append((r.status_code, r.json().get("version") if r.is_success else None))

    threads = [threading.Thread(target=load) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(before_s)
        action()
        time.sleep(after_s)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return calls


def assert_switched(calls: list[Call], old: int, new: int) -> None:
    """No call failed, the first answers came from ``old``, the last ones all from ``new``."""
    statuses = {s for s, _ in calls}
    versions = [v for _, v in calls]
    assert statuses == {200}, f"{len(calls)} requests, statuses {statuses}"
    assert versions[0] == old and versions[-1] == new
    assert old not in versions[len(versions) - 5 :]
