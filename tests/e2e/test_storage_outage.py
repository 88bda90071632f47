"""Storage stops answering for 30 s in the middle of a run: Azurite (started by the host of `make run`) is frozen
with SIGSTOP, then resumed with SIGCONT, while a Ray cluster runs a task on a worker.

During the outage every API request that needs storage must answer within 10 s: 503 problem+json with Retry-After
(the API's documented answer when storage does not answer in time); /health, which needs no storage, answers 200.
After it: no poison storm (at most a couple of messages poisoned), no lost state (the cluster row and every instance
row as before, the busy worker kept), and the cluster resumes by itself: a new demand is served.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from provisioning.local import LocalCloudProvider, cluster_processes
from tests.e2e.chaos import (
    check_one_node_per_instance_and_no_orphan,
    live_workers,
    processes_by_instance,
    running_workers,
    start_driver,
    wait_for,
)
from tests.e2e.host_process import HostProcess, azurites_on, is_alive
from tests.e2e.support import FINAL_STATUSES, describe
from tests.support.azurite import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]


NAME = "e2e-outage"
CONFIG = f"""
cluster_name: {NAME}
max_workers: 3
idle_timeout_minutes: 1
provider: {{type: local, launch_delay_s: 0}}
auth: {{ssh_user: ray}}
available_node_types:
  head: {{resources: {{CPU: 0}}, min_workers: 0, max_workers: 0, node_config: {{}}}}
  cpu: {{resources: {{CPU: 1}}, min_workers: 0, max_workers: 3, idle_timeout_s: 3, node_config: {{}}}}
head_node_type: head
"""
SCHEDULE = "*/3 * * * * *"
OUTAGE_S = 30.0
ANSWER_WITHIN_S = 10.0
CLIENT_TIMEOUT_S = ANSWER_WITHIN_S + 5.0  # a request still unanswered then is recorded as such
MAX_POISONED = 2
START_TIMEOUT_S = 90.0
DELETE_TIMEOUT_S = 90.0
# What the API is asked during the outage: each needs storage, none changes anything.
OUTAGE_REQUESTS = (
    ("GET", f"/clusters/{NAME}"),
    ("GET", "/clusters"),
    ("DELETE", "/clusters/no-such-cluster"),
)


@dataclass(frozen=True)
class Answer:
    method: str
    path: str
    sent_at: float  # time.monotonic()
    answered_at: float
    status: int  # 0: no answer within CLIENT_TIMEOUT_S (or the connection failed)
    content_type: str = ""
    retry_after: str = ""
    body: str = ""

    @property
    def seconds(self) -> float:
        return self.answered_at - self.sent_at

    @property
    def is_storage_unavailable(self) -> bool:
        """503 problem+json with a Retry-After in seconds: what the API answers while storage does not."""
        return (
            self.status == 503
            and self.content_type.startswith("application/problem+json")
            and self.retry_after.isdigit()
        )

    def line(self, outage_started: float = 0.0) -> str:
        answer = f"{self.status} {self.content_type} Retry-After={self.retry_after!r}" if self.status else "no answer"
        return (
            f"{self.method} {self.path} sent at +{self.sent_at - outage_started:.1f} s: {answer} after "
            f"{self.seconds:.1f} s {self.body[:100]!r}"
        )


def ask(host: HostProcess, method: str, path: str) -> Answer:
    sent_at = time.monotonic()
    try:
        response = host.api(method, path, timeout_s=CLIENT_TIMEOUT_S)
    except requests.RequestException as error:
        return Answer(method, path, sent_at, time.monotonic(), 0, body=type(error).__name__)
    return Answer(
        method,
        path,
        sent_at,
        time.monotonic(),
        response.status_code,
        response.headers.get("content-type", ""),
        response.headers.get("retry-after", ""),
        response.text,
    )


def ask_during(host: HostProcess, stop: threading.Event, answers: list[Answer]) -> None:
    """Send OUTAGE_REQUESTS in turn (each in its own thread, so a hung one does not stop the others) until `stop`."""
    threads: list[threading.Thread] = []
    while not stop.is_set():
        for method, path in OUTAGE_REQUESTS:
            thread = threading.Thread(target=lambda m=method, p=path: answers.append(ask(host, m, p)), daemon=True)
            thread.start()
            threads.append(thread)
        stop.wait(3.0)
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_S + 5.0)


def poisoned_messages(host: HostProcess) -> int:
    """Messages the hosts moved to the poison queue (each says so in its log)."""
    return sum(
        log.read_text(errors="replace").count("moving it to queue 'reconcile-poison'")
        for log in host.log_dir.glob("host-*.log")
    )


def test_a_30_s_storage_outage_answers_503_in_time_loses_nothing_and_the_cluster_resumes(work_dir: Path):  # noqa: PLR0915 -- one scenario end to end, its steps in order
    host = HostProcess(
        work_dir / "stack",
        work_dir / "logs",
        port=free_port(),
        azurite_ports=(free_port(), free_port(), free_port()),
        settings={
            "RECONCILE_SCHEDULE": SCHEDULE,
            "CLUSTER_TOKEN_KEY": secrets.token_hex(32),
            "ALLOW_LOCAL_PROVIDER": "true",
        },
    )
    resume_azurite: list[int] = []
    try:
        host.start()
        response = host.api("POST", "/clusters", data=CONFIG, headers={"content-type": "application/yaml"})
        assert response.status_code == 202, response.text
        view = wait_for(host, NAME, lambda v: v["status"] == "running", what="the head", timeout_s=START_TIMEOUT_S)
        busy = start_driver(view, work_dir / "driver-1", "tasks", "--count", "1")
        try:
            before = wait_for(
                host,
                NAME,
                lambda v: len(running_workers(v, "cpu")) == 1 and len(busy.started_tasks()) == 1,
                what="one cpu worker running the first task",
                timeout_s=START_TIMEOUT_S,
            )
            poisoned_before = poisoned_messages(host)

            # ---- the outage ---------------------------------------------------------------------------------------
            azurite_pid = host.azurite_pid()
            assert azurite_pid is not None, "no Azurite recorded in azurite-process.json"
            answers: list[Answer] = []
            stop_asking = threading.Event()
            asker = threading.Thread(target=ask_during, args=(host, stop_asking, answers), daemon=True)
            os.kill(azurite_pid, signal.SIGSTOP)
            resume_azurite.append(azurite_pid)
            outage_started = time.monotonic()
            asker.start()
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
            health_during = ask(host, "GET", "/health")
            stop_asking.set()
            os.kill(azurite_pid, signal.SIGCONT)
            resumed_at = time.monotonic()
            resume_azurite.clear()
            asker.join(CLIENT_TIMEOUT_S + 10.0)
            during = sorted(answers, key=lambda answer: (answer.path, answer.sent_at))
            report = "\n".join(answer.line(outage_started) for answer in during)
            print(
                f"answers to requests sent during the {OUTAGE_S:g} s outage (storage back at "
                f"+{resumed_at - outage_started:.1f} s):\n{report}\nhealth: {health_during.line(outage_started)}",
                flush=True,
            )

            # ---- it resumes by itself: a new demand is served ------------------------------------------------------
            new_demand = start_driver(before, work_dir / "driver-2", "tasks", "--count", "2")
            try:
                after = wait_for(
                    host,
                    NAME,
                    lambda v: len(running_workers(v, "cpu")) == 3 and len(new_demand.started_tasks()) == 2,
                    what="two more cpu workers for the new demand (storage is back)",
                    timeout_s=START_TIMEOUT_S,
                )
                new_demand.finish()
            finally:
                new_demand.stop()
            busy.finish()
        finally:
            busy.stop()

        # ---- no lost state, no duplicate, no poison storm ---------------------------------------------------------
        lost = {node["instance_id"] for node in before["nodes"]} - {node["instance_id"] for node in after["nodes"]}
        assert not lost, f"rows lost in the outage: {lost}\nbefore:\n{describe(before)}\nafter:\n{describe(after)}"
        for node in before["nodes"]:  # the head and the busy worker were kept as they were
            [same] = [n for n in after["nodes"] if n["instance_id"] == node["instance_id"]]
            assert same["status"] == node["status"] == "ray_running", f"{node} became {same}"
        assert (after["status"], after["created_at"]) == (before["status"], before["created_at"])
        check_one_node_per_instance_and_no_orphan(host, NAME, "after the outage: ")
        poisoned = poisoned_messages(host) - poisoned_before
        poison_events = [event for event in after["events"] if event["kind"] == "poison"]
        print(f"poisoned messages: {poisoned}, poison events among the last 20: {len(poison_events)}", flush=True)
        assert poisoned <= MAX_POISONED, f"{poisoned} messages poisoned by a {OUTAGE_S:g} s outage"
        assert len(poison_events) <= MAX_POISONED, poison_events

        # ---- DELETE leaves nothing ----------------------------------------------------------------------------------
        assert host.api("DELETE", f"/clusters/{NAME}").status_code == 202
        deleted = wait_for(host, NAME, lambda v: v["status"] == "deleted", what="deletion", timeout_s=DELETE_TIMEOUT_S)
        assert all(node["status"] in FINAL_STATUSES for node in deleted["nodes"]), deleted["nodes"]
        assert processes_by_instance(host.provider_dir, NAME) == {}
        assert not live_workers(deleted)
        # ---- every request during the outage answered in time, with 503 problem+json and Retry-After --------------
        assert health_during.status == 200, health_during.line(outage_started)
        assert len(during) >= len(OUTAGE_REQUESTS) * 5, report
        late = [answer for answer in during if not answer.status or answer.seconds > ANSWER_WITHIN_S]
        assert not late, f"requests not answered within {ANSWER_WITHIN_S:g} s during the outage:\n{report}"
        # Answered while storage was down: 503. A request still in flight when storage came back may get its
        # normal answer instead (2xx, or 404 for the unknown cluster), never another error.
        wrong = [
            answer
            for answer in during
            if not answer.is_storage_unavailable and (answer.answered_at < resumed_at or answer.status >= 500)
        ]
        assert not wrong, f"requests during the outage not answered 503 problem+json with Retry-After:\n{report}"
        assert sum(answer.is_storage_unavailable for answer in during) >= len(OUTAGE_REQUESTS) * 3, report

    finally:
        for pid in resume_azurite:  # never leave a stopped Azurite behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        host.stop()
        leftovers = cluster_processes(host.provider_dir, NAME)
        LocalCloudProvider(host.provider_dir).destroy_cluster(NAME)  # kills leftovers, removes Ray's temp folder
        azurites = azurites_on(host.data_dir / "azurite")
        assert host.process is None or not is_alive(host.process.pid)
    assert not leftovers, f"processes of {NAME} outlived the test: {leftovers}"
    assert not azurites, f"Azurite outlived the host: {azurites}"
