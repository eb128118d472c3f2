"""What the batch job service and its runner share: errors, job ids, a job this replica runs,
and the final `error` bodies of a stopped job."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional

from core.errors import AICoreError
from serve_app.batch.service import Prepared
from serve_app.error_mapping import error_body
from serve_app.protocol.batch import BatchItemResult
from serve_app.state.batch_job_records import JobRecord

JOBS_PATH = "/api/v1/generate/batch/jobs"
CANCEL_POLL_S = 0.5  # how often a runner reads its jobs' records for a cancel request
CANCEL_WAIT_S = 5.0  # how long a cancel call waits for the job to reach its final state
STALE_BEATS = 6  # heartbeats missed before a job counts as interrupted


_last_id_us = 0


def new_job_id(now: float) -> str:
    """`bjob_` + the creation time (µs, 13 hex digits; strictly increasing in one process) + 11
    random hex digits: ids sort by age, so a listing pages by id."""
    global _last_id_us
    _last_id_us = max(int(now * 1_000_000) % 16 ** 13, _last_id_us + 1)
    return f"bjob_{_last_id_us:013x}{secrets.token_hex(6)[:11]}"


@dataclass(eq=False)
class LocalJob:
    """A job this replica runs: its items, who submitted it from where, the results so far, its task."""

    record: JobRecord
    entries: list[Prepared]
    principal: Any  # the key at submission: only its id (and whether it is a bootstrap key) is used
    client_ip: Optional[str]  # the submitting address: the key's IP allowlist is checked against it
    results: dict[int, BatchItemResult] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)  # items whose generation began
    task: Optional[asyncio.Task] = None
    stop_reason: Optional[str] = None  # "cancelled", "interrupted" or "quota"
    stop_error: Optional[dict] = None  # why it stopped without a cancel request (the final `error`)
    entered: bool = False  # its task began (a task cancelled before that never runs its own code)
    finishing: bool = False

    def stop(self, reason: str, error: Optional[dict] = None) -> None:
        if self.stop_reason is None and not self.finishing and self.task is not None:
            self.stop_reason, self.stop_error = reason, error
            if self.entered:
                self.task.cancel()


def stopped_error(refused: AICoreError) -> dict:
    """The final `error` of a job its key's state stopped (the code says why: `key_revoked`, ...)."""
    body = error_body(refused)["error"]
    body.pop("request_id", None)
    body["message"] = f"the job was stopped: {refused.message}; the items without a result did not run"
    return body


def interrupted_error(not_run: int) -> dict:
    return {"message": f"the ingress replica running this job stopped; {not_run} items did not run: "
                       "submit them again", "type": "server_error", "param": None, "code": "job_interrupted"}


def to_json(value: dict) -> str:
    import json

    return json.dumps(value)
