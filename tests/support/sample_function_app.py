"""A small v2-model function app used only by the local host's tests.

It uses the same triggers and bindings as the real function_app.py (routes with parameters, a timer whose
schedule is an app setting, queue triggers on a queue and its poison queue, a queue output), and records what it
receives in RECORDER so a test can wait for an invocation that happens on one of the host's threads.
Queue names come from app settings, so each test can use fresh queues in the one Azurite of the session.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

ALWAYS_FAILING_BODY = "always-fail"


@dataclass
class Invocation:
    function_name: str
    detail: dict[str, Any]
    started_monotonic: float = field(default_factory=time.monotonic)


class Recorder:
    """Invocations seen by the sample functions, and how long the timer should take (set by a test)."""

    def __init__(self) -> None:
        self._invocations: list[Invocation] = []
        self._changed = threading.Condition()
        self.timer_run_s = 0.0
        self.timers_running = 0
        self.most_timers_running_at_once = 0

    def reset(self) -> None:
        with self._changed:
            self._invocations.clear()
            self.timer_run_s = 0.0
            self.timers_running = 0
            self.most_timers_running_at_once = 0

    def timer_started(self) -> None:
        with self._changed:
            self.timers_running += 1
            self.most_timers_running_at_once = max(self.most_timers_running_at_once, self.timers_running)

    def timer_finished(self) -> None:
        with self._changed:
            self.timers_running -= 1

    def record(self, function_name: str, **detail: Any) -> None:
        with self._changed:
            self._invocations.append(Invocation(function_name, detail))
            self._changed.notify_all()

    def of(self, function_name: str) -> list[Invocation]:
        with self._changed:
            return [item for item in self._invocations if item.function_name == function_name]

    def wait_for(
        self, function_name: str, count: int = 1, timeout_s: float = 10.0, where: Callable[[Invocation], bool] = bool
    ) -> list[Invocation]:
        """The first `count` matching invocations; raises TimeoutError when they do not come in time."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                matching = [i for i in self._invocations if i.function_name == function_name and where(i)]
                if len(matching) >= count:
                    return matching[:count]
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise TimeoutError(f"{function_name}: {len(matching)} of {count} invocations in {timeout_s} s")
                self._changed.wait(remaining_s)


RECORDER = Recorder()


def problem(status: int, detail: str) -> func.HttpResponse:
    body = json.dumps({"title": "error", "status": status, "detail": detail})
    return func.HttpResponse(body, status_code=status, mimetype="application/problem+json")


@app.route(route="items/{name}", methods=["GET", "DELETE"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    body = {"name": req.route_params["name"], "method": req.method, "query": dict(req.params)}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="items/{name}/actions", methods=["POST"])
def post_item_action(req: func.HttpRequest) -> func.HttpResponse:
    location = f"/api/items/{req.route_params['name']}"
    payload = {"received": req.get_body().decode("utf-8"), "content_type": req.headers.get("content-type")}
    return func.HttpResponse(
        json.dumps(payload), status_code=202, headers={"Location": location}, mimetype="application/json"
    )


@app.route(route="items/special", methods=["GET"])
def get_special_item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("the literal route wins over items/{name}")


@app.route(route="boom", methods=["GET"])
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret detail that must not reach the client")


@app.route(route="async-echo", methods=["POST"])
async def async_echo(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0)
    return func.HttpResponse(req.get_body(), mimetype="application/octet-stream")


@app.route(route="enqueue", methods=["POST"])
@app.queue_output(arg_name="outbox", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
def enqueue(req: func.HttpRequest, outbox: func.Out[str]) -> func.HttpResponse:
    outbox.set(req.get_body().decode("utf-8"))
    return func.HttpResponse(status_code=202)


@app.timer_trigger(schedule="%SAMPLE_SCHEDULE%", arg_name="timer", run_on_startup=False)
def sample_timer(timer: func.TimerRequest) -> None:
    RECORDER.timer_started()
    RECORDER.record("sample_timer", past_due=timer.past_due)
    time.sleep(RECORDER.timer_run_s)
    RECORDER.timer_finished()


@app.timer_trigger(schedule="%STARTUP_SCHEDULE%", arg_name="timer", run_on_startup=True)
def startup_timer(timer: func.TimerRequest) -> None:
    RECORDER.record("startup_timer", past_due=timer.past_due)


@app.queue_trigger(arg_name="message", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
def work(message: func.QueueMessage) -> None:
    body = message.get_body().decode("utf-8")
    RECORDER.record("work", body=body, dequeue_count=message.dequeue_count, message_id=message.id)
    if body == ALWAYS_FAILING_BODY:
        raise RuntimeError("this message always fails")


@app.queue_trigger(arg_name="message", queue_name="%WORK_QUEUE%-poison", connection="AzureWebJobsStorage")
async def work_poison(message: func.QueueMessage) -> None:
    RECORDER.record("work_poison", body=message.get_body().decode("utf-8"))
