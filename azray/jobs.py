"""Ray Jobs through the cluster's dashboard: submit, stream the logs, return the job's exit code.

Ray is imported here only, when `submit` runs: the rest of azray does not need it installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import TextIO

from azray.errors import CliError, ExitCode

# A job that failed without an exit code (its driver never started, or Ray lost it) exits azray with FAILED.
STOPPED_JOB_EXIT = int(ExitCode.FAILED)


def _job_client(address: str, token: str) -> object:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise CliError(
            "submit needs Ray's job client on this machine: pip install 'ray[default]' (the cluster's Ray version)",
            ExitCode.UNSUPPORTED,
        ) from None
    try:
        # An explicit Authorization header wins over whatever RAY_AUTH_* this shell happens to have.
        return JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    except (ConnectionError, RuntimeError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CliError(f"cannot reach Ray's job API at {address}: {first_line[:200]}", ExitCode.UNREACHABLE) from None


def submit_and_follow(
    address: str,
    token: str,
    entrypoint: str,
    *,
    working_dir: str | None,
    on_submitted: Callable[[str], None],
    out: TextIO | None = None,
) -> int:
    """Submit `entrypoint`, copy its logs to `out` as they come, and return the job's exit code.

    SUCCEEDED is 0; FAILED is the driver's exit code when Ray knows it, else 1; STOPPED is 1.
    KeyboardInterrupt propagates after `on_submitted` was called: the job keeps running.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    stream = out or sys.stdout
    # Ray's client logs each websocket close at INFO on stderr: noise between the job's own lines.
    for logger in ("ray", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    client = _job_client(address, token)
    assert isinstance(client, JobSubmissionClient)
    runtime_env = {"working_dir": working_dir} if working_dir else None
    try:
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    except RuntimeError as error:
        first_line = (str(error).strip().splitlines() or ["no detail"])[0]
        raise CliError(f"Ray refused the job: {first_line[:300]}", ExitCode.INVALID) from None
    on_submitted(job_id)

    async def follow() -> None:
        async for chunk in client.tail_job_logs(job_id):
            stream.write(chunk)
            stream.flush()

    # The log stream can close early (the dashboard restarted): the status below is what counts.
    with contextlib.suppress(RuntimeError):
        asyncio.run(follow())
    status = client.get_job_status(job_id)
    while not status.is_terminal():
        asyncio.run(asyncio.sleep(0.5))
        status = client.get_job_status(job_id)
    if status == JobStatus.SUCCEEDED:
        return 0
    if status == JobStatus.FAILED:
        info = client.get_job_info(job_id)
        code = info.driver_exit_code
        return code if isinstance(code, int) and 0 < code < 256 else int(ExitCode.FAILED)
    return STOPPED_JOB_EXIT
