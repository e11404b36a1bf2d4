"""The prediction log: bounded, never blocking, every record in exactly one file or counted."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow.dataset as pds
import pytest

from components.prediction_log import (
    SCHEMA,
    LogSettings,
    PredictionLog,
    Record,
    sampled,
    without_fields,
)

DAY = 1_764_633_600.0  # 2025-12-02 00:00:00 UTC


def record(i: int, ts: float = DAY + 60, **kw: object) -> Record:
    base: dict[str, object] = {
        "request_id": f"req-{i}",
        "ts": ts,
        "model": "ctr",
        "version": 3,
        "route": "predict",
        "rows": 1,
        "features": {"rows": [{"age": 30 + i, "email": f"u{i}@example.com"}]},
        "outputs": {"model": "ctr", "version": 3, "predictions": [{"score": 0.25}]},
        "latency_ms": 1.5,
    }
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


def read_logs(root: Path) -> list[dict[str, object]]:
    folder = root / "logs" / "ctr"
    if not folder.exists():
        return []
    return pds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pylist()


def test_a_flush_writes_one_parquet_file_per_day_with_the_bodies_as_json(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), "ctr", LogSettings(drop_fields=("email",)))
    assert log.offer(record(1)) and log.offer(record(2, ts=DAY + 86_400 + 5))
    assert log.flush() == 2
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert [f.rsplit("/", 1)[0] for f in files] == [
        "logs/ctr/date=2025-12-02",
        "logs/ctr/date=2025-12-03",
    ]
    assert not list(tmp_path.rglob("*.tmp-*"))  # no partial file left behind
    rows = sorted(read_logs(tmp_path), key=lambda r: str(r["request_id"]))
    assert [r["request_id"] for r in rows] == ["req-1", "req-2"]
    first = rows[0]
    assert json.loads(str(first["features"])) == {"rows": [{"age": 31}]}  # email never written
    assert json.loads(str(first["outputs"]))["predictions"] == [{"score": 0.25}]
    assert (first["model"], first["version"], first["route"], first["answered_by"]) == (
        "ctr",
        3,
        "predict",
        "production",
    )
    assert first["shadow_version"] is None and first["shadow_outputs"] is None
    schema = pds.dataset(tmp_path / "logs" / "ctr", format="parquet").schema
    assert schema.field("ts").type == SCHEMA.field("ts").type
    s = log.snapshot()
    assert (s.offered, s.written, s.files, s.dropped, s.queued) == (2, 2, 2, 0, 0)


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), "ctr", LogSettings(queue_records=5))
    taken = [log.offer(record(i)) for i in range(8)]
    assert taken == [True] * 5 + [False] * 3
    assert log.snapshot().queued == 5 and log.snapshot().dropped == 3
    log.flush()
    assert len(read_logs(tmp_path)) == 5
    assert log.offer(record(9))  # room again


def test_sampling_keeps_the_share_by_request_id_and_no_log_requests_are_counted(
    tmp_path: Path,
) -> None:
    ids = [f"id-{i}" for i in range(4000)]
    kept = sum(sampled(i, 0.3) for i in ids)
    assert abs(kept / 4000 - 0.3) < 0.03
    assert [sampled(i, 0.3) for i in ids[:50]] == [sampled(i, 0.3) for i in ids[:50]]
    assert all(sampled(i, 1.0) for i in ids[:10]) and not any(sampled(i, 0) for i in ids[:10])
    log = PredictionLog(str(tmp_path), "ctr", LogSettings(share=0.3))
    for i in range(1000):
        log.offer(record(i), no_log=(i % 10 == 0))
    log.flush()
    s = log.snapshot()
    assert s.not_logged == 100
    assert s.written + s.not_sampled + s.not_logged == 1000
    assert s.written == len(read_logs(tmp_path))


def test_a_write_that_fails_is_retried_once_then_counted_as_dropped(tmp_path: Path) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the log folder should be")
    log = PredictionLog(str(tmp_path), "ctr")
    log.offer(record(1))
    assert log.flush() == 0  # failed: kept for one retry
    s = log.snapshot()
    assert (s.write_errors, s.dropped, s.queued) == (1, 0, 1) and s.last_error
    blocker.unlink()
    assert log.flush() == 1  # the retry succeeds: nothing lost
    assert [r["request_id"] for r in read_logs(tmp_path)] == ["req-1"]
    blocker2 = tmp_path / "logs" / "ctr" / "date=2025-12-02"
    for p in blocker2.iterdir():
        p.unlink()
    blocker2.rmdir()
    blocker2.write_text("blocked")
    log.offer(record(2))
    log.flush()
    log.flush()  # second failure: dropped, counted
    s = log.snapshot()
    assert (s.write_errors, s.dropped, s.queued, s.written) == (3, 1, 0, 1)


def test_many_threads_offering_while_the_writer_runs_lose_nothing_uncounted(
    tmp_path: Path,
) -> None:
    seen: list[int] = []
    log = PredictionLog(
        str(tmp_path),
        "ctr",
        LogSettings(queue_records=2000, flush_records=500, flush_seconds=0.05),
        on_written=lambda s: seen.append(s.written),
    ).start()

    def client(t: int) -> None:
        for i in range(2500):
            log.offer(record(t * 10_000 + i))

    threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    s = log.snapshot()
    ids = [r["request_id"] for r in read_logs(tmp_path)]
    assert len(ids) == len(set(ids)) == s.written  # each written record in one file, once
    assert s.written + s.dropped == s.offered == 10_000
    assert s.queued == 0 and seen and seen[-1] == s.written


def test_dropped_fields_leave_every_row_candidate_and_query() -> None:
    body = {
        "query": {"user": "u1", "email": "x@y"},
        "candidates": [{"item": 1, "email": "a"}, {"item": 2}],
        "top_k": 5,
    }
    assert without_fields(body, ["email"]) == {
        "query": {"user": "u1"},
        "candidates": [{"item": 1}, {"item": 2}],
        "top_k": 5,
    }
    assert without_fields(body, []) is body


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_share_bounds(tmp_path: Path, share: float) -> None:
    log = PredictionLog(str(tmp_path), "ctr", LogSettings(share=share))
    log.offer(record(1))
    log.close()
    assert len(read_logs(tmp_path)) == int(share)


def test_offers_after_close_are_counted_as_dropped_never_left_queued(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), "ctr").start()
    log.offer(record(1))
    log.close()
    assert not log.offer(record(2))
    s = log.snapshot()
    assert (s.offered, s.written, s.dropped, s.queued) == (2, 1, 1, 0)
    log.close()  # twice is harmless


def test_a_failed_write_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("blocked")
    log = PredictionLog(str(tmp_path), "ctr", writer="w1")
    log.offer(record(1))
    log.flush()
    assert "logs/ctr/date=2025-12-02/w1-000001.parquet" in log.snapshot().last_error


def test_bodies_given_as_json_bytes_are_written_as_sent(tmp_path: Path) -> None:
    sent = b'{"rows": [{"age": 1, "email": "x@y"}]}'
    answered = b'{"model":"ctr","version":3,"predictions":[{"score":0.5}]}'
    for drop, expected in (
        ((), {"rows": [{"age": 1, "email": "x@y"}]}),
        (("email",), {"rows": [{"age": 1}]}),
    ):
        folder = tmp_path / f"drop{len(drop)}"
        log = PredictionLog(str(folder), "ctr", LogSettings(drop_fields=drop))
        log.offer(record(1, features=sent, outputs=answered))
        log.flush()
        (row,) = read_logs(folder)
        assert json.loads(str(row["features"])) == expected
        assert row["outputs"] == answered.decode()


def test_the_log_folder_of_an_object_store_uri_keeps_its_query() -> None:
    from components.prediction_log import log_folder

    uri = "s3://bucket/team/rayline?endpoint_override=127.0.0.1%3A9000&scheme=http"
    assert log_folder(uri, "ctr") == (
        "s3://bucket/team/rayline/logs/ctr?endpoint_override=127.0.0.1%3A9000&scheme=http"
    )
    assert log_folder("/data/rayline/", "ctr") == "/data/rayline/logs/ctr"
