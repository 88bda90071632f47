"""Read a v2-model function app's metadata and call its user functions the way the Python worker does.

The metadata comes from the app object itself (`app.get_functions()`), so the local host never holds a second
copy of the routes, schedules or queue names: what `func start` indexes is exactly what runs here.
Only the triggers and bindings this project uses are supported; anything else fails at start-up, by name.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import azure.functions as func
from azure.functions.decorators.core import AuthLevel, Binding, BindingDirection
from azure.functions.decorators.function_app import Function, FunctionRegister
from azure.functions.decorators.http import HttpOutput, HttpTrigger
from azure.functions.decorators.queue import QueueOutput, QueueTrigger
from azure.functions.decorators.timer import TimerTrigger

__all__ = [
    "FunctionSpec",
    "HttpTriggerSpec",
    "Invoker",
    "OutputValue",
    "QueueOutputSpec",
    "QueueSender",
    "QueueTriggerSpec",
    "TimerTriggerSpec",
    "UnsupportedFunctionError",
    "index_functions",
]

RETURN_BINDING_NAME = "$return"
ALL_HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

T = TypeVar("T")


class UnsupportedFunctionError(ValueError):
    """The app declares a trigger, binding or parameter the local host cannot serve."""


@dataclass(frozen=True)
class HttpTriggerSpec:
    route: str
    methods: tuple[str, ...]
    auth_level: str


@dataclass(frozen=True)
class TimerTriggerSpec:
    schedule: str  # as declared, possibly `%APP_SETTING%`
    run_on_startup: bool


@dataclass(frozen=True)
class QueueTriggerSpec:
    queue_name: str
    connection_setting: str


@dataclass(frozen=True)
class QueueOutputSpec:
    arg_name: str  # a parameter name, or "$return"
    queue_name: str
    connection_setting: str


TriggerSpec = HttpTriggerSpec | TimerTriggerSpec | QueueTriggerSpec


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    trigger: TriggerSpec
    trigger_arg: str
    user_function: Callable[..., Any]
    queue_outputs: tuple[QueueOutputSpec, ...] = ()
    http_output_arg: str | None = None  # where an HTTP response comes from: "$return" or an Out parameter


def index_functions(app: FunctionRegister) -> list[FunctionSpec]:
    """Every function of `app`, as the local host will run it. Raises UnsupportedFunctionError, naming what."""
    # get_functions() records the names it validated and rejects them as duplicates on a second call, so an app
    # object indexed before (by a test, or by an earlier LocalHost) would fail; its names are validated again here.
    app.functions_bindings = None
    return [_spec_of(function) for function in app.get_functions()]


def _spec_of(function: Function) -> FunctionSpec:
    name = function.get_function_name() or function.get_user_function().__name__
    trigger = function.get_trigger()
    if trigger is None:
        raise UnsupportedFunctionError(f"function {name!r} has no trigger")
    trigger_spec: TriggerSpec
    if isinstance(trigger, HttpTrigger):
        methods = tuple(str(method) for method in trigger.methods) if trigger.methods else ALL_HTTP_METHODS
        auth_level = str((trigger.auth_level or AuthLevel.FUNCTION).value)
        trigger_spec = HttpTriggerSpec(route=(trigger.route or name).strip("/"), methods=methods, auth_level=auth_level)
    elif isinstance(trigger, TimerTrigger):
        trigger_spec = TimerTriggerSpec(schedule=trigger.schedule, run_on_startup=bool(trigger.run_on_startup))
    elif isinstance(trigger, QueueTrigger):
        trigger_spec = QueueTriggerSpec(queue_name=trigger.queue_name, connection_setting=trigger.connection)
    else:
        raise UnsupportedFunctionError(
            f"function {name!r}: trigger type {trigger.type!r} is not supported by the local host "
            "(it serves httpTrigger, timerTrigger and queueTrigger); use `func start` for it"
        )

    queue_outputs: list[QueueOutputSpec] = []
    http_output_arg: str | None = None
    for binding in function.get_bindings():
        if binding is trigger:
            continue
        if isinstance(binding, QueueOutput):
            queue_outputs.append(QueueOutputSpec(binding.name, binding.queue_name, binding.connection))
        elif isinstance(binding, HttpOutput) and isinstance(trigger_spec, HttpTriggerSpec):
            http_output_arg = binding.name
        else:
            raise UnsupportedFunctionError(
                f"function {name!r}: {_direction_label(binding)} binding {binding.type!r} ({binding.name!r}) "
                "is not supported by the local host (it supports queue and http outputs); use `func start` for it"
            )
    spec = FunctionSpec(
        name=name,
        trigger=trigger_spec,
        trigger_arg=trigger.name,
        user_function=function.get_user_function(),
        queue_outputs=tuple(queue_outputs),
        http_output_arg=http_output_arg,
    )
    _check_parameters(spec)
    return spec


def _direction_label(binding: Binding) -> str:
    return "output" if binding.direction == BindingDirection.OUT.value else "input"


def _check_parameters(spec: FunctionSpec) -> None:
    """Every parameter without a default must be one the host can fill, as the worker checks at indexing."""
    bindable = {spec.trigger_arg, *_out_parameter_names(spec)}
    for parameter in inspect.signature(spec.user_function).parameters.values():
        if parameter.name not in bindable and parameter.default is inspect.Parameter.empty:
            raise UnsupportedFunctionError(
                f"function {spec.name!r}: parameter {parameter.name!r} has no binding (bindings: {sorted(bindable)})"
            )


def _out_parameter_names(spec: FunctionSpec) -> list[str]:
    names = [output.arg_name for output in spec.queue_outputs if output.arg_name != RETURN_BINDING_NAME]
    if spec.http_output_arg not in (None, RETURN_BINDING_NAME):
        names.append(str(spec.http_output_arg))
    return names


# --------------------------------------------------------------------------------------------
# Invocation
# --------------------------------------------------------------------------------------------


class OutputValue(func.Out[T], Generic[T]):
    """The `func.Out[...]` object handed to a function for an output binding parameter."""

    def __init__(self) -> None:
        self._values: list[T] = []  # empty until set(): None is a value a function may set

    @property
    def is_set(self) -> bool:
        return bool(self._values)

    def set(self, val: T) -> None:
        self._values[:] = [val]

    def get(self) -> T:
        if not self._values:
            raise LookupError("the function did not set this output")
        return self._values[0]


class QueueSender(Protocol):
    def send(self, output: QueueOutputSpec, messages: Sequence[str | bytes]) -> None:
        """Append messages to the output's queue (creating it if missing), encoded as host.json says."""
        ...


@dataclass(frozen=True)
class InvocationResult:
    return_value: Any
    outputs: Mapping[str, Any]  # Out parameters the function set, by parameter name


class Invoker:
    """Calls user functions: sync ones on the calling thread, async ones on one shared event loop.

    The Python worker also runs every coroutine function on a single loop, so clients created at import time
    and reused across invocations behave the same here.
    """

    def __init__(self, queue_sender: QueueSender) -> None:
        self._queue_sender = queue_sender
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="local-host-async", daemon=True)
        self._loop_thread.start()

    def stop(self) -> None:
        if self._loop is None or self._loop_thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        self._loop.close()
        self._loop, self._loop_thread = None, None

    def invoke(self, spec: FunctionSpec, trigger_value: Any) -> InvocationResult:
        """Run the function once and deliver its queue outputs; exceptions of the function propagate."""
        outputs = {name: OutputValue[Any]() for name in _out_parameter_names(spec)}
        result = spec.user_function(**{spec.trigger_arg: trigger_value}, **outputs)
        if inspect.isawaitable(result):
            result = self._await(result)
        set_outputs = {name: out.get() for name, out in outputs.items() if out.is_set}
        for queue_output in spec.queue_outputs:
            value = result if queue_output.arg_name == RETURN_BINDING_NAME else set_outputs.get(queue_output.arg_name)
            if value is not None:
                self._queue_sender.send(queue_output, _as_messages(value, spec.name, queue_output))
        return InvocationResult(return_value=result, outputs=set_outputs)

    def _await(self, awaitable: Any) -> Any:
        if self._loop is None:
            raise RuntimeError("the invoker is not started")

        async def run() -> Any:
            return await awaitable

        future: Future[Any] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result()


def _as_messages(value: Any, function_name: str, output: QueueOutputSpec) -> list[str | bytes]:
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(item, str | bytes) for item in value):
        return list(value)
    raise TypeError(
        f"function {function_name!r} gave queue output {output.arg_name!r} a {type(value).__name__}; "
        "expected str, bytes or a list of them"
    )
