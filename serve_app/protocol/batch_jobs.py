"""Wire types of the asynchronous batch jobs: `/api/v1/generate/batch/jobs`.

A job takes the body of `POST /api/v1/generate/batch` (`BatchRequest`) and answers at once
(202) with a `BatchJob`; the same object, polled, carries the per-item results in item order
(each exactly as the synchronous endpoint gives it).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from serve_app.protocol.batch import BatchItemResult, BatchRequest
from serve_app.protocol.common import schema_limits

JobStatus = Literal["queued", "running", "completed", "cancelled", "failed"]
TERMINAL: frozenset[str] = frozenset({"completed", "cancelled", "failed"})
# 13 hex digits of the creation time in microseconds, then 11 random ones: ids sort by age.
JOB_ID_PATTERN = r"^bjob_[0-9a-f]{24}$"
LIST_LIMIT_MAX = 100  # jobs on one page of GET /api/v1/generate/batch/jobs


class BatchJobRequest(BatchRequest):
    """The body of a batch job: a batch, with its own item limit."""

    items: list[dict[str, Any]] = Field(
        min_length=1, description="As in a batch; at most BATCH_JOB_MAX_ITEMS.",
        json_schema_extra=schema_limits(maxItems="batch_job_max_items"),
    )


class BatchJobCounts(BaseModel):
    items: int = Field(description="Items in the job.")
    succeeded: int = Field(description="Items answered (`status` ok).")
    failed: int = Field(description="Items whose own error is in their result (invalid item, unknown model, ...).")
    cancelled: int = Field(description="Items stopped or never started because the job was cancelled.")
    pending: int = Field(description="Items without a result yet; for a failed job, items that never ran.")


_QUEUED_EXAMPLE = {
    "object": "batch.job", "id": "bjob_5f0c9a2e41d84b7c9e3a1f60", "status": "queued",
    "status_url": "/api/v1/generate/batch/jobs/bjob_5f0c9a2e41d84b7c9e3a1f60",
    "created_at": 1795920257, "expires_at": 1796006657, "cancel_requested": False,
    "counts": {"items": 3, "succeeded": 0, "failed": 0, "cancelled": 0, "pending": 3}, "tokens_used": 0,
}
_RUNNING_EXAMPLE = {
    "object": "batch.job", "id": "bjob_5f0c9a2e41d84b7c9e3a1f60", "status": "running",
    "status_url": "/api/v1/generate/batch/jobs/bjob_5f0c9a2e41d84b7c9e3a1f60",
    "created_at": 1795920257, "started_at": 1795920257, "expires_at": 1796006657, "cancel_requested": False,
    "counts": {"items": 3, "succeeded": 1, "failed": 0, "cancelled": 0, "pending": 2}, "tokens_used": 41,
    "results": [{"index": 0, "id": "mail-001", "status": "ok", "result": {
        "response": "Yes, we are open on Sundays from 10 to 16.", "model": "smollm2-135m-instruct",
        "tokens_used": 41, "processing_time": 0.52, "timestamp": "2026-11-29T02:04:17.221Z", "cached": False}}],
}
_CANCELLED_EXAMPLE = {
    "object": "batch.job", "id": "bjob_5f0c9a2e41d84b7c9e3a1f60", "status": "cancelled",
    "status_url": "/api/v1/generate/batch/jobs/bjob_5f0c9a2e41d84b7c9e3a1f60",
    "created_at": 1795920257, "started_at": 1795920257, "finished_at": 1795920259, "expires_at": 1796006659,
    "cancel_requested": True, "processing_time": 2.04,
    "counts": {"items": 2, "succeeded": 1, "failed": 0, "cancelled": 1, "pending": 0}, "tokens_used": 41,
    "results": [
        {"index": 0, "id": "mail-001", "status": "ok", "result": {
            "response": "Yes, we are open on Sundays from 10 to 16.", "model": "smollm2-135m-instruct",
            "tokens_used": 41, "processing_time": 0.52, "timestamp": "2026-11-29T02:04:17.221Z", "cached": False}},
        {"index": 1, "id": "mail-002", "status": "error", "error": {
            "message": "the job was cancelled while this item ran", "type": "invalid_request_error",
            "param": None, "code": "cancelled"}},
    ],
}
_FAILED_EXAMPLE = {
    "object": "batch.job", "id": "bjob_0b6e2d7c5a4f4e3d8c1b9a70", "status": "failed",
    "status_url": "/api/v1/generate/batch/jobs/bjob_0b6e2d7c5a4f4e3d8c1b9a70",
    "created_at": 1795920257, "started_at": 1795920258, "finished_at": 1795920291, "expires_at": 1796006691,
    "cancel_requested": False,
    "counts": {"items": 40, "succeeded": 12, "failed": 0, "cancelled": 0, "pending": 28}, "tokens_used": 503,
    "error": {"message": "the ingress replica running this job stopped; 28 items did not run: submit them again",
              "type": "server_error", "param": None, "code": "job_interrupted"},
}


class BatchJob(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_QUEUED_EXAMPLE, _RUNNING_EXAMPLE, _CANCELLED_EXAMPLE, _FAILED_EXAMPLE]})

    object: Literal["batch.job"] = "batch.job"
    id: str
    owner: Optional[str] = Field(None, description="The id of the key that submitted the job.")
    status: JobStatus = Field(description="queued, running, then completed, cancelled or failed (final).")
    status_url: str = Field(description="Where to poll this job (GET); cancel with POST <status_url>/cancel.")
    created_at: int = Field(description="Unix seconds.")
    started_at: Optional[int] = None
    finished_at: Optional[int] = None
    expires_at: Optional[int] = Field(None, description="When the job and its results are deleted (BATCH_JOB_TTL_S).")
    cancel_requested: bool = False
    counts: BatchJobCounts
    tokens_used: int = Field(0, description="Tokens of the items answered so far.")
    processing_time: Optional[float] = Field(None, description="Seconds from start to end, once finished.")
    error: Optional[dict] = Field(None, description="Why a failed job failed, or why a job was stopped without a "
                                  "cancel request: its key was revoked, disabled or expired, or lost a permission "
                                  "(`cancelled`, code `key_revoked`, `key_disabled`, ...). The OpenAI error object.")
    results: Optional[list[BatchItemResult]] = Field(
        None, description="Results so far, in item order (all of them once the job is final); "
        "omitted with `?results=false` and in the 202 answer.",
    )


class BatchJobList(BaseModel):
    """A page of jobs, newest first, without their results (OpenAI's list object)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "object": "list", "data": [{**_QUEUED_EXAMPLE, "owner": "key-5b1f0e7a9c2d4e86"}],
        "first_id": _QUEUED_EXAMPLE["id"], "last_id": _QUEUED_EXAMPLE["id"], "has_more": False,
    }]})

    object: Literal["list"] = "list"
    data: list[BatchJob] = Field(description="Jobs, newest first, without `results` (GET a job for them).")
    first_id: Optional[str] = None
    last_id: Optional[str] = Field(None, description="Pass as `after` for the next page.")
    has_more: bool = Field(description="More jobs match after `last_id`.")
