"""Which version answers a request, and the other version's outputs for the log. No Ray here.

Up to three versions run in a replica: production, a canary answering ``canary_share`` of the
requests (chosen by a hash of a key header, so one caller keeps one version), and a shadow
scored beside production that never answers. Every answered request may get a *companion*:
the shadow for a production answer, production for a canary answer (so both versions have
outputs on the canary's requests and ``rayline monitor`` compares them paired). The companion
is scored off the request's path, after the response is built, within ``shadow_timeout_s``; its
outputs go to the prediction log record's ``shadow_version`` / ``shadow_outputs``, its errors to
``shadow_error``. ``companion_body`` is that scoring; ``CompanionStats`` counts what happened.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from serve.scoring import Body, ModelScorer, score_frames

PRODUCTION = "production"
CANARY = "canary"


def in_canary(key: str, share: float) -> bool:
    """Whether the caller ``key`` is in the canary's ``share`` (the same answer on every
    replica; independent of the log's sampling, which hashes the request id alone)."""
    if share <= 0.0:
        return False
    if share >= 1.0:
        return True
    digest = hashlib.blake2b(key.encode(), digest_size=8, person=b"rl-canary").digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def companion_body(
    scorer: ModelScorer, route: str, body: dict[str, Any], top_k: int | None = None
) -> Body:
    """The response ``scorer`` would have given to the request ``body`` (the parsed JSON):
    all candidates ranked for /rank (``top_k`` ignored: the log keeps the whole order). Raises
    what scoring raises (a RequestError when the version needs other features)."""
    if route == "rank":
        rows = scorer.merge_query(body.get("query"), list(body.get("candidates") or []))
        frame = scorer.frame(rows, "candidates", scorer.limits.max_candidates)
        return scorer.rank_response(score_frames(scorer.predictor, [frame])[0], None)
    frame = scorer.frame(list(body.get("rows") or []), "rows", scorer.limits.max_rows)
    return scorer.predict_response(score_frames(scorer.predictor, [frame])[0])


@dataclass
class CompanionStats:
    """Companion scorings of one replica since its routing was configured (``/model``)."""

    scored: int = 0  # outputs logged
    failed: int = 0  # raised: the error is in the record's shadow_error
    timed_out: int = 0  # slower than shadow_timeout_s: left out of the record
    skipped: int = 0  # too many companion scorings already running: not attempted

    def as_dict(self) -> dict[str, int]:
        return {
            "scored": self.scored,
            "failed": self.failed,
            "timed_out": self.timed_out,
            "skipped": self.skipped,
        }
