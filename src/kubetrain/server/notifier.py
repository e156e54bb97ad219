"""The controller's webhook sender: delivers the notifications outbox (store/notifications.py), never in the loop.

A thread of the controller (whichever process holds the reconcile loop, so
exactly one sender exists per home), attached like the usage sampler: it
starts and stops with the loop's threads.  The reconcile loop only writes an
outbox row in the transaction that ends a job; everything slow -- DNS,
connecting, a receiver that answers late or never -- happens here, on a small
pool of workers, so a scheduling pass never waits for a webhook.

Each due message is POSTed as JSON (core/notifications.py's body, plus the
job's dashboard URL) with a 5 s timeout, redirects not followed, only to http
and https URLs.  A 2xx answer delivers it; anything else is tried again after
1 s, 2 s, 4 s ... (``backoff``), at most ``MAX_TRIES`` times, then given up
with its last error kept and a Warning event on the job.  At most
:data:`PER_HOST` deliveries to one receiver are in flight at once, so a
receiver that is down (or swallows connections) holds up only its own
messages, never another job's.

At least once: a controller killed between a receiver's answer and the
record of it sends that message again after its restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx

from kubetrain import __version__
from kubetrain.core.notifications import TIMEOUT, check_webhook_url, describe_failure
from kubetrain.settings import Settings

log = logging.getLogger("kubetrain.notifier")

#: Deliveries in flight at once, in all.
WORKERS = 4
#: Deliveries in flight at once to one receiver (scheme, host and port).
PER_HOST = 2
#: Seconds between two looks at the outbox.
POLL_SECONDS = 0.5


class Notifier:
    def __init__(self, store, job_url: Callable[[str], str | None], *, workers: int = WORKERS,
                 poll_seconds: float = POLL_SECONDS, timeout: float = TIMEOUT) -> None:
        self.store = store
        self.job_url = job_url
        self.workers = workers
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self._lock = threading.Lock()
        self._in_flight: dict[int, str] = {}  # message id -> receiver

    def run(self, stop: threading.Event) -> None:
        client = httpx.Client(follow_redirects=False, timeout=self.timeout,
                              headers={"User-Agent": f"kubetrain/{__version__}"})
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="webhook")
        try:
            while not stop.wait(self.poll_seconds):
                try:
                    self.dispatch(pool, client)
                except Exception:
                    log.exception("webhook sender: could not read the outbox; trying again")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            client.close()

    def dispatch(self, pool: ThreadPoolExecutor, client: httpx.Client) -> int:
        """Hand due messages to the workers (within the limits); the number handed over."""
        with self._lock:
            busy = dict(self._in_flight)
        room = self.workers - len(busy)
        if room <= 0:
            return 0
        per_host = Counter(busy.values())
        handed = 0
        for item in self.store.due_notifications(now=time.time(), limit=room + 16, skip=busy):
            host = _receiver(item.url)
            if per_host[host] >= PER_HOST:
                continue  # that receiver is slow: its messages wait, the others go
            per_host[host] += 1
            with self._lock:
                self._in_flight[item.id] = host
            pool.submit(self._deliver, client, item)
            handed += 1
            if handed >= room:
                break
        return handed

    def _deliver(self, client: httpx.Client, item) -> None:
        try:
            error = self.send(client, item)
            try:
                if self.store.notification_tried(item.id, now=time.time(), error=error):
                    log.warning("webhook for job %s given up: %s", item.job, error)
            except Exception:
                log.exception("webhook sender: could not record a try of message %d", item.id)
        finally:
            with self._lock:
                self._in_flight.pop(item.id, None)

    def send(self, client: httpx.Client, item) -> str | None:
        """POST one message; None when the receiver took it, else why not."""
        try:
            check_webhook_url(item.url, "the webhook URL")
        except ValueError as exc:
            return str(exc)  # stored before this version checked it: never sent anywhere but http(s)
        body = {**item.body, "url": self.job_url(item.job)}
        try:
            response = client.post(item.url, json=body, headers={"X-Kubetrain-Delivery": str(item.id)})
        except httpx.HTTPError as exc:
            return describe_failure(None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
        if 200 <= response.status_code < 300:
            return None
        return describe_failure(response.status_code, None)


def _receiver(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port}"
    except ValueError:
        return url


def dashboard_url(settings: Settings) -> Callable[[str], str | None]:
    """A job's page on the dashboard, from the URL the master published in ``run/master.json`` (read once
    it is there: the controller may start before the master has written it)."""
    known: list[str] = []

    def url(job: str) -> str | None:
        if not known:
            from kubetrain.server.daemon import read_master

            base = (read_master(settings) or {}).get("url")
            if not base:
                return None
            known.append(str(base).rstrip("/"))
        return f"{known[0]}/dashboard/jobs/{job}"

    return url


def add_notifier(settings: Settings, store, reconciler) -> Notifier:
    """Attach the sender thread to ``reconciler``: it starts with the loop's threads and stops with them."""
    notifier = Notifier(store, dashboard_url(settings))
    reconciler.add_thread(notifier.run, "webhook-sender")
    return notifier
