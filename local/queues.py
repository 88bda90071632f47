"""Queue triggers and queue outputs against Azure Storage queues (Azurite locally), as the Functions host runs them.

For each queue trigger, one poller thread reads messages and runs the function on a pool of `batchSize` threads:
- success deletes the message;
- failure leaves it: it becomes visible again after host.json `visibilityTimeout` and is retried;
- a message that cannot be decoded (not base64 under the default `messageEncoding`) counts as a failed attempt;
- once a failed attempt has `dequeue_count >= maxDequeueCount`, the message is copied, body unchanged, to
  `<queue>-poison` and deleted from the queue (a message received with a count already above it goes straight there);
- an empty queue is polled again after 100 ms, doubling up to the local polling cap (see config.py); any message
  resets the wait, so a busy queue is drained without pauses.

As the Azure host does, a received message is hidden for 10 minutes (`QueueOptions.message_lease`) and, while the
function runs, hidden again for as long every half lease, so a long run is never handed a second time to another
invocation; settling the message then uses the pop receipt of the latest renewal.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as WorkerQueueMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StoredMessage

from local.config import QueueOptions
from local.functions import FunctionSpec, Invoker, QueueOutputSpec, QueueTriggerSpec

__all__ = ["MessageLease", "MissingConnectionError", "QueuePoller", "QueueStorage", "poison_queue_name"]

logger = logging.getLogger("local.queues")

# The worker's concrete message class (func.QueueMessage lacks dequeue_count); its constructor is untyped.
new_trigger_message: Callable[..., func.QueueMessage] = WorkerQueueMessage

FIRST_EMPTY_POLL_DELAY = timedelta(milliseconds=100)


class MissingConnectionError(LookupError):
    """A binding's `connection` names an app setting that is not set."""


def poison_queue_name(queue_name: str) -> str:
    return f"{queue_name}-poison"


class QueueStorage:
    """Queue clients by (connection setting, queue name), and the host.json message encoding.

    Clients are made without retries: the poll loop is the retry, and start-up fails at once when Azurite is down
    instead of after the SDK's minute of back-off.
    """

    def __init__(self, settings: Mapping[str, str], options: QueueOptions) -> None:
        self._settings = settings
        self.options = options
        self._clients: dict[tuple[str, str], QueueClient] = {}
        self._lock = threading.Lock()

    def connection_string(self, connection_setting: str) -> str:
        # Like the host: the setting itself, else the same name prefixed with AzureWebJobs.
        for name in (connection_setting, f"AzureWebJobs{connection_setting}"):
            value = self._settings.get(name)
            if value:
                return value
        raise MissingConnectionError(
            f"app setting {connection_setting!r} (a queue binding's connection) is not set; locally it must be a "
            "connection string, e.g. 'UseDevelopmentStorage=true' for Azurite on its default ports"
        )

    def client(self, connection_setting: str, queue_name: str) -> QueueClient:
        """The queue's client; the queue is created on first use, as the host creates trigger and output queues."""
        key = (connection_setting, queue_name)
        with self._lock:
            existing = self._clients.get(key)
        if existing is not None:
            return existing
        client = QueueClient.from_connection_string(
            self.connection_string(connection_setting), queue_name, retry_total=0
        )
        with contextlib.suppress(ResourceExistsError):  # the usual case after the first run
            client.create_queue()
        with self._lock:
            return self._clients.setdefault(key, client)

    def close(self) -> None:
        """Close every client's connections (open keep-alive connections would delay Azurite's own shutdown)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def send(self, output: QueueOutputSpec, messages: Sequence[str | bytes]) -> None:
        client = self.client(output.connection_setting, output.queue_name)
        for message in messages:
            client.send_message(self.encode(message))

    def encode(self, body: str | bytes) -> str:
        raw = body.encode("utf-8") if isinstance(body, str) else body
        if self.options.message_encoding == "base64":
            return base64.b64encode(raw).decode("ascii")
        return raw.decode("utf-8")

    def decode(self, content: str) -> bytes:
        if self.options.message_encoding == "base64":
            try:
                return base64.b64decode(content, validate=True)
            except binascii.Error as error:
                raise ValueError(
                    "message is not base64, but host.json extensions.queues.messageEncoding is 'base64'"
                ) from error
        return content.encode("utf-8")


class QueuePoller:
    """Runs one queue-triggered function against its queue until stopped."""

    def __init__(self, spec: FunctionSpec, storage: QueueStorage, invoker: Invoker) -> None:
        if not isinstance(spec.trigger, QueueTriggerSpec):
            raise TypeError(f"function {spec.name!r} is not queue-triggered")
        self.spec = spec
        self.trigger = spec.trigger
        self._storage = storage
        self._invoker = invoker
        self._options = storage.options
        self._stopping = threading.Event()
        self._slots_changed = threading.Condition()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._queue: QueueClient  # set by start(), before the poll thread exists

    def start(self) -> None:
        """Create the queue (raising if storage is unreachable), then start polling it."""
        self._queue = self._storage.client(self.trigger.connection_setting, self.trigger.queue_name)
        self._pool = ThreadPoolExecutor(self._options.batch_size, thread_name_prefix=f"queue-{self.spec.name}")
        self._thread = threading.Thread(target=self._poll, name=f"queue-poller-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for invocations in progress (their messages are then settled as usual)."""
        self._stopping.set()
        with self._slots_changed:
            self._slots_changed.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _poll(self) -> None:
        empty_poll_delay = timedelta(0)
        while not self._stopping.is_set():
            free_slots = self._wait_for_free_slots()
            if free_slots == 0:
                continue  # stopping
            try:
                messages = list(
                    self._queue.receive_messages(
                        max_messages=free_slots,
                        messages_per_page=free_slots,
                        visibility_timeout=math.ceil(self._options.message_lease.total_seconds()),
                    )
                )
            except AzureError as error:
                logger.warning("queue %r: cannot read messages (%s); retrying", self.trigger.queue_name, error)
                messages = []
            if messages:
                empty_poll_delay = timedelta(0)
                for message in messages:
                    self._dispatch(message)
            else:
                empty_poll_delay = self._next_empty_poll_delay(empty_poll_delay)
                self._stopping.wait(empty_poll_delay.total_seconds())

    def _next_empty_poll_delay(self, previous: timedelta) -> timedelta:
        doubled = FIRST_EMPTY_POLL_DELAY if previous == timedelta(0) else previous * 2
        return min(doubled, self._options.local_max_polling_interval)

    def _wait_for_free_slots(self) -> int:
        with self._slots_changed:
            while self._in_flight >= self._options.batch_size and not self._stopping.is_set():
                self._slots_changed.wait()
            return 0 if self._stopping.is_set() else self._options.batch_size - self._in_flight

    def _dispatch(self, message: StoredMessage) -> None:
        if self._pool is None:
            return
        with self._slots_changed:
            self._in_flight += 1
        self._pool.submit(self._process_and_release, message)

    def _process_and_release(self, message: StoredMessage) -> None:
        try:
            self._process(message)
        except Exception:
            # Settling a message failed (storage unreachable): it reappears after its lease, and is retried then.
            logger.exception("queue %r: could not settle message %s", self.trigger.queue_name, message.id)
        finally:
            with self._slots_changed:
                self._in_flight -= 1
                self._slots_changed.notify_all()

    def _process(self, message: StoredMessage) -> None:
        dequeue_count = int(message.dequeue_count or 0)
        if dequeue_count > self._options.max_dequeue_count:
            self._move_to_poison(message, dequeue_count, str(message.pop_receipt))
            return
        lease = MessageLease(self._queue, message, self._options.message_lease)
        try:
            trigger_value = new_trigger_message(
                id=message.id,
                body=self._storage.decode(str(message.content)),
                dequeue_count=dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            started = time.monotonic()
            with lease.renewed_while_running():
                self._invoker.invoke(self.spec, trigger_value)
        except Exception:
            logger.exception(
                "function %r failed on message %s (attempt %d of %d)",
                self.spec.name,
                message.id,
                dequeue_count,
                self._options.max_dequeue_count,
            )
            if dequeue_count >= self._options.max_dequeue_count:
                self._move_to_poison(message, dequeue_count, lease.pop_receipt)
            else:
                self._queue.update_message(
                    message.id,
                    pop_receipt=lease.pop_receipt,
                    visibility_timeout=math.ceil(self._options.visibility_timeout.total_seconds()),
                )
            return
        self._queue.delete_message(message.id, pop_receipt=lease.pop_receipt)
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.info(
            "function %r succeeded on message %s (attempt %d) in %.1f ms",
            self.spec.name,
            message.id,
            dequeue_count,
            elapsed_ms,
        )

    def _move_to_poison(self, message: StoredMessage, dequeue_count: int, pop_receipt: str) -> None:
        poison_name = poison_queue_name(self.trigger.queue_name)
        logger.warning(
            "message %s reached dequeue count %d (maxDequeueCount %d): moving it to queue %r",
            message.id,
            dequeue_count,
            self._options.max_dequeue_count,
            poison_name,
        )
        poison_queue = self._storage.client(self.trigger.connection_setting, poison_name)
        poison_queue.send_message(message.content)
        self._queue.delete_message(message.id, pop_receipt=pop_receipt)


class MessageLease:
    """How long a received message stays hidden from other receivers, renewed while its function runs.

    Each renewal (an update of the message's visibility) returns a new pop receipt; the old one no longer settles
    the message, so the poller reads `pop_receipt` only after `renewed_while_running()` has ended.
    """

    def __init__(self, queue: QueueClient, message: StoredMessage, duration: timedelta) -> None:
        self._queue = queue
        self.message_id = str(message.id)
        self.pop_receipt = str(message.pop_receipt)
        self._duration_s = math.ceil(duration.total_seconds())
        self._renewal_interval_s = duration.total_seconds() / 2  # the Azure host renews at half the lease too
        self._function_finished = threading.Event()

    @contextlib.contextmanager
    def renewed_while_running(self) -> Iterator[None]:
        renewer = threading.Thread(target=self._renew_until_finished, name=f"lease-{self.message_id}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            self._function_finished.set()
            renewer.join()  # after this, pop_receipt is the latest and nothing changes it any more

    def _renew_until_finished(self) -> None:
        while not self._function_finished.wait(self._renewal_interval_s):
            try:
                receipt = self._queue.update_message(
                    self.message_id, pop_receipt=self.pop_receipt, visibility_timeout=self._duration_s
                )
            except ResourceNotFoundError:
                # Already visible again and received elsewhere (or deleted): the lease is lost for good.
                logger.warning("message %s: lease lost; it may run twice", self.message_id)
                return
            except AzureError as error:
                # Storage unreachable: the lease still holds until it expires; try again at the next interval.
                logger.warning("message %s: could not renew its lease (%s); retrying", self.message_id, error)
                continue
            self.pop_receipt = str(receipt.pop_receipt)
            logger.debug("message %s: lease renewed for %d s", self.message_id, self._duration_s)
