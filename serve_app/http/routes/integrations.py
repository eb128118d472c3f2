"""Routes for the bots: batch generation and batch jobs (email), the Telegram webhook. Logic lives elsewhere."""

from __future__ import annotations

from typing import Optional, Union

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from core.errors import ResultQuotaExceeded, TooManyBatchJobs
from serve_app.access.auth import Principal
from serve_app.http.dependencies import require_batch_caller, require_caller, require_job_canceller, require_job_reader
from serve_app.http.routes.audit import audited
from serve_app.http.routes.statuses import BODY, JOB, KEYED, QUERY, WEBHOOK, links, responses_for
from serve_app.pipeline import Admission, Outcome, RequestContext
from serve_app.protocol.batch import BatchRequest, BatchResponse
from serve_app.protocol.batch_jobs import (
    JOB_ID_PATTERN,
    LIST_LIMIT_MAX,
    TERMINAL,
    BatchJob,
    BatchJobList,
    BatchJobRequest,
    JobStatus,
)
from serve_app.protocol.telegram import TgNoReply, TgSendMessage, TgUpdate

router = APIRouter(prefix="/api/v1")


@router.post("/generate/batch", response_model=BatchResponse, response_model_exclude_none=True,
             responses=responses_for(KEYED, BODY))
async def generate_batch(body: BatchRequest, request: Request, caller: RequestContext = Depends(require_batch_caller)):
    return await request.app.state.batch.run(body, caller)


def _job(job: BatchJob, status_code: int = 200) -> JSONResponse:
    return JSONResponse(job.model_dump(mode="json", exclude_none=True), status_code=status_code,
                        headers={"Location": job.status_url} if status_code == 202 else None)


_JOB = "/api/v1/generate/batch/jobs/{job_id}"
_JOB_LINKS = links(202, GetJob=("get", _JOB, "/id"), CancelJob=("post", _JOB + "/cancel", "/id"))[202]
# Per-key bounds of a submission (429): unfinished jobs, result bytes stored in the window.
_JOB_BOUNDS = (TooManyBatchJobs, ResultQuotaExceeded)


@router.post("/generate/batch/jobs", status_code=202, response_model=BatchJob, responses=responses_for(KEYED, BODY, _JOB_BOUNDS, {202: {
    "description": "Accepted: poll `status_url` (also in the `Location` header) for progress and results.",
    **_JOB_LINKS,
}}))
async def submit_batch_job(body: BatchJobRequest, request: Request, admission: Admission = Depends(require_caller)):
    """The submission is one request of the key's (RPM); each item is admitted as it runs (its
    key looked up again, its tokens reserved, its usage recorded)."""
    return _job(await request.app.state.batch_jobs.submit(body, admission), 202)


@router.get("/generate/batch/jobs", response_model=BatchJobList, response_model_exclude_none=True,
            responses=responses_for(KEYED, QUERY))
async def list_batch_jobs(
    request: Request, principal: Principal = Depends(require_job_reader),
    owner: Optional[str] = Query(None, max_length=64, description="Jobs of this key id only (admins; "
                                 "another key lists only its own jobs, whatever this says)."),
    status: Optional[JobStatus] = Query(None, description="Jobs in this status only."),
    limit: int = Query(20, ge=1, le=LIST_LIMIT_MAX, description="Jobs on this page."),
    after: Optional[str] = Query(None, pattern=JOB_ID_PATTERN, description="The `last_id` of the previous page."),
):
    """Jobs newest first, without their results: every job for a key with the `admin` or `admin_read`
    scope, a key's own otherwise. Kept jobs only (BATCH_JOB_TTL_S)."""
    jobs = await request.app.state.batch_jobs.list(principal, owner=owner, status=status, limit=limit, after=after)
    return JSONResponse(jobs.model_dump(mode="json", exclude_none=True))


@router.get("/generate/batch/jobs/{job_id}", response_model=BatchJob, response_model_exclude_none=True,
            responses=responses_for(KEYED, QUERY, JOB))
async def get_batch_job(job_id: str, request: Request, principal: Principal = Depends(require_job_reader),
                        results: bool = Query(True, description="false: status and counts only.")):
    return _job(await request.app.state.batch_jobs.get(job_id, principal, with_results=results))


@router.post("/generate/batch/jobs/{job_id}/cancel", response_model=BatchJob, responses=responses_for(KEYED, JOB, {202: {
    "model": BatchJob, "description": "Cancel requested; the job has not reached its final state yet: poll it.",
}}))
async def cancel_batch_job(job_id: str, request: Request, principal: Principal = Depends(require_job_canceller)):
    """Cancel a job: the submitting key's own, or any job with the `admin` scope (recorded in the audit log)."""
    jobs = request.app.state.batch_jobs
    # A job this key cannot see (404) is not recorded: any inference key could fill the log with those.
    before = await jobs.get(job_id, principal, with_results=False)
    async with audited(request, principal, "job.cancel", job_id) as action:
        job = await jobs.cancel(job_id, principal)
        action.status = 200 if job.status in TERMINAL else 202
        action.seen({"status": before.status}, {"status": job.status})
    return _job(job, action.status)


def telegram_secret(request: Request, x_telegram_bot_api_secret_token: Optional[str] = Header(None)) -> None:
    """Checked before the body is read: a wrong secret is a 401/403 whatever the payload."""
    request.app.state.telegram.check_secret(x_telegram_bot_api_secret_token)


@router.post("/webhooks/telegram", dependencies=[Depends(telegram_secret)], responses=responses_for(WEBHOOK, {200: {
    "model": Union[TgSendMessage, TgNoReply],
    "description": "A sendMessage call for Telegram to make, or `{}` when there is nothing to say.",
    "content": {"application/json": {"examples": {
        "reply": {"value": TgSendMessage.model_config["json_schema_extra"]["examples"][0]}, "nothing": {"value": {}},
    }}},
}}))
async def telegram_webhook(update: TgUpdate, request: Request):
    reply = await request.app.state.telegram.handle(update, Outcome.of(request).client_ip)
    return JSONResponse(reply.model_dump(exclude_none=True) if reply else {})
