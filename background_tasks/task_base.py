"""The base class of every MIDAS task: one retry policy, a redelivery cap, and outcomes that are never lost.

Retry policy, in one place (``MidasTask.__call__``): a ``TransientError`` from
the task, or from storing its outcome, is retried with exponential backoff and
full jitter (``retry_backoff`` s doubled per retry, at most
``retry_backoff_max`` = MIDAS_RETRY_BACKOFF_MAX), at most ``max_retries`` =
MIDAS_MAX_RETRIES times; then ``give_up`` decides (by default the task fails
with the error). ``StorageUnavailable`` (the store, the results database or
the working folder cannot be written) is retried for as long as it lasts:
the document is fine, and giving up could not be recorded anyway. A retry is
a new message in Redis, published before the running one is acknowledged.

Outcomes: the task writes its own result (or failure) to the results
database before it returns (``JsonDatabaseBackend.store_outcome``). When that
write fails the task retries like any transient error, instead of Celery's
default of acknowledging the message with its result lost (``get()`` then
waits forever).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from celery import Task, states
from celery.exceptions import Ignore, Reject, Retry
from celery.utils.time import get_exponential_backoff_interval

from background_tasks import keys
from background_tasks.errors import RedeliveryLimitExceeded, StorageUnavailable, TransientError

log = logging.getLogger("midas.tasks")


class MidasTask(Task):
    """Base task: retries transient errors with backoff, caps redeliveries, stores its own outcome.

    With late acknowledgement a message is redelivered when its process dies;
    a task that kills its process every time would loop forever. Each delivery
    is counted in Redis per (task id, retry number); past the cap the task
    fails for good instead of running again.
    """

    #: Celery's own autoretry wrapper is not used: ``__call__`` applies the policy below
    #: to the task's errors and to failures to store its outcome alike.
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_for: tuple[type[BaseException], ...] = (TransientError,)
    retry_backoff = 1
    retry_jitter = True

    _redis = None

    @property  # type: ignore[override]
    def max_retries(self) -> int | None:
        """MIDAS_MAX_RETRIES (a task may set its own ``max_retries``, e.g. None for polling)."""
        return self.app.conf.get("midas_max_retries", 5)

    @property
    def retry_backoff_max(self) -> int:
        """MIDAS_RETRY_BACKOFF_MAX: the longest delay between two tries, in seconds."""
        return int(self.app.conf.get("midas_retry_backoff_max", 300))

    # -- the policy ---------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:  # a plain function call, not a delivery
            return super().__call__(*args, **kwargs)
        try:
            outcome, state = self._outcome(args, kwargs), states.SUCCESS
        except (Retry, Ignore, Reject):
            raise
        except Exception as exc:
            outcome, state = exc, states.FAILURE
        try:
            self._store_outcome(outcome, state)
        except TransientError as exc:
            raise self.retry_later(exc) from None
        if state == states.FAILURE:
            raise outcome
        return outcome

    def _outcome(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._check_redeliveries()
        try:
            return self.run(*args, **kwargs)
        except self.retry_for as exc:
            if not self.may_retry(exc):
                log.warning(
                    "%s[%s]: giving up after %d retries: %s", self.name, self.request.id, self.request.retries, exc
                )
                try:
                    return self.give_up(exc, args, kwargs)
                except StorageUnavailable as unrecorded:
                    raise self.retry_later(unrecorded) from None
            raise self.retry_later(exc) from None

    def may_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` gets another try: storage faults always, other transient errors ``max_retries`` times."""
        limit = self.max_retries
        return isinstance(exc, StorageUnavailable) or limit is None or self.request.retries < limit

    def retry_delay(self) -> int:
        """Seconds until the next try: exponential backoff with full jitter, capped."""
        return get_exponential_backoff_interval(
            factor=self.retry_backoff,
            retries=self.request.retries,
            maximum=self.retry_backoff_max,
            full_jitter=self.retry_jitter,
        )

    def retry_later(self, exc: BaseException) -> Retry:
        """Publish the next try (with its delay) and return the ``Retry`` to raise."""
        delay = self.retry_delay()
        log.info("%s[%s]: %s; retry %d in %d s", self.name, self.request.id, exc, self.request.retries + 1, delay)
        # The decision is made (may_retry); Celery must not apply its own limit on top.
        return self.retry(exc=exc, countdown=delay, max_retries=self.request.retries + 1)

    def give_up(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """After the last retry: by default the task fails with ``exc``. Subclasses may record and return."""
        raise exc

    # -- outcomes -------------------------------------------------------------------

    def _store_outcome(self, outcome: Any, state: str) -> None:
        request = self.request
        store = getattr(self.backend, "store_outcome", None)
        if store is None or request.is_eager:
            return  # another backend, or eager: Celery's tracer stores (or not) as usual
        ignored = self.ignore_result or bool(request.ignore_result)
        if state == states.SUCCESS and ignored:
            return
        if state == states.FAILURE and ignored and not self.store_errors_even_if_ignored:
            return
        tb = "".join(traceback.format_exception(outcome)) if state == states.FAILURE else None
        store(request.id, outcome, state, traceback=tb, request=request)

    # -- redeliveries ------------------------------------------------------------------

    def _delivery_counter(self) -> Any:
        if MidasTask._redis is None:
            import redis

            MidasTask._redis = redis.Redis.from_url(self.app.conf.broker_url, socket_timeout=5)
        return MidasTask._redis

    def _check_redeliveries(self) -> None:
        cap = self.app.conf.get("midas_max_redeliveries")
        request = self.request
        if not cap or request.is_eager:
            return
        key = keys.deliveries_key(request.id, request.retries or 0)
        try:
            client = self._delivery_counter()
            pipe = client.pipeline()
            pipe.incr(key)
            pipe.expire(key, int(self.app.conf.broker_transport_options.get("visibility_timeout", 3600)) * (cap + 2))
            deliveries = pipe.execute()[0]
        except Exception as exc:  # the broker is down too; the task cannot run anyway
            log.warning("could not count deliveries of %s: %s", request.id, exc)
            return
        if deliveries > cap:
            raise RedeliveryLimitExceeded(
                f"task {self.name}[{request.id}] was delivered {deliveries} times and its worker process "
                f"died each time; giving up after MIDAS_MAX_REDELIVERIES={cap}"
            )
