"""The reconcile loop: make the running world match the store, one idempotent pass at a time.

Each pass: observe active attempts through the engine and record the ended
ones; stop attempts whose job was cancelled; plan the queue (pure
:func:`~kubetrain.core.planning.plan`) and commit the decisions in one
transaction *before* launching anything.

Write ordering that makes a ``kill -9`` of the master safe at any line:

1. a decision is committed (attempt row ``Starting`` + job ``Running``) before
   the engine is asked to launch, so a launch is never forgotten;
2. the engine's launch is idempotent: the supervisor claims the attempt folder
   with O_EXCL before running anything, so a relaunch after a crash is a no-op
   when the first launch got through;
3. an attempt ends in the store only from the supervisor's ``status.json``
   (written with fsync + rename) or from proof that the supervisor is gone;
   recording an end twice is a no-op.

A restarted master therefore re-attaches to what runs, launches what was
decided but never started, and records every end exactly once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import replace
from typing import Callable, Mapping

from kubetrain.core.attempts import (
    ActiveAttempt,
    AttemptHandle,
    LaunchOrder,
    Outcome,
    Phase,
)
from kubetrain.core.errors import ConflictError, NotFoundError
from kubetrain.core.dependencies import Doomed, Hold, Ready, judge
from kubetrain.core.fairshare import fair_keys
from kubetrain.core.planning import (JobRequest, NodeCapacity, ReplicaSlot, RunningJob, Situation, Unschedulable,
                                     Waiting, plan)
from kubetrain.core.queues import PreemptionPolicy
from kubetrain.core.states import AttemptState, Reason
from kubetrain.engines.base import Engine
from kubetrain.store.store import Store

log = logging.getLogger("kubetrain.reconciler")

#: Seconds a trial marked for early stopping gets to notice ``should_stop()`` and exit by itself.
EARLY_STOP_GRACE_SECONDS = 5.0
#: Jobs archived per pass at most (one transaction: ≈ 0.5 ms a job on SQLite) and seconds between looks.
HISTORY_BATCH = 200
HISTORY_INTERVAL_SECONDS = 300.0
#: Seconds between looks for finished jobs past their ttlSecondsAfterFinished.
EXPIRY_INTERVAL_SECONDS = 5.0
#: Wake-socket datagrams: supervisors and the API send :data:`WAKE_ANY` ("something changed, run a pass");
#: the API sends :data:`WAKE_EXPERIMENTS` after creating an experiment, so the sweep controller looks at once.
WAKE_ANY = b"1"
WAKE_EXPERIMENTS = b"experiments"


def send_wake(path: str, message: bytes = WAKE_ANY) -> None:
    """Poke a reconcile loop through its wake socket (another process); harmless if none is listening."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(message, path)
    except OSError:
        pass


def free_capacity(nodes: list[NodeCapacity], active: list[ActiveAttempt]) -> list[NodeCapacity]:
    """Nodes with what active attempts hold taken off (every replica of a gang on its own node), from the
    engine's own free figures where it gives them (other tenants' pods on a shared cluster)."""
    held: dict[str, list[ReplicaSlot]] = {}
    for attempt in active:
        for slot in attempt.holdings():
            held.setdefault(slot.node, []).append(slot)
    return [node.less(held.get(node.name, ())) for node in nodes]


def running_jobs(active: list[ActiveAttempt]) -> tuple[RunningJob, ...]:
    """Live attempts as the planner weighs them: what each holds, its priority and queue, when it ends at the
    latest (its start + ``activeDeadlineSeconds``; unknown before it started), whether it is being preempted."""
    out = []
    for attempt in active:
        body = attempt.spec.get("spec") or {}
        deadline = body.get("activeDeadlineSeconds")
        ends_at = attempt.started_at + deadline if attempt.started_at is not None and deadline else None
        out.append(RunningJob(attempt.job, attempt.number, owner=attempt.owner, queue=body.get("queue"),
                              priority=int(body.get("priority") or 0),
                              started_at=attempt.started_at or attempt.created_at, ends_at=ends_at,
                              slots=attempt.holdings(), preempted_by=attempt.preempted_by))
    return tuple(out)


class Reconciler:
    def __init__(self, store: Store, engine: Engine, *, resync_seconds: float = 1.0,
                 wake_socket: str | None = None, clock: Callable[[], float] = time.time,
                 controllers: list | None = None, fair_share: bool = False,
                 team_shares: Mapping[str, float] | None = None,
                 preemption: PreemptionPolicy = PreemptionPolicy.NEVER) -> None:
        self.store = store
        #: Round-robin over submitters within a priority (see core/planning.py), instead of strict submit order.
        self.fair_share = fair_share
        #: Fair share's weight per team (``scheduling.shares``; core/fairshare.py).
        self.team_shares = dict(team_shares or {})
        #: What a job in no queue may preempt (``scheduling.preemption``; queues have their own policy).
        self.preemption = preemption
        self.engine = engine
        #: Higher-level controllers (experiments) run each pass, before planning.
        self.controllers = controllers or []
        #: Completes a launch order just before the engine gets it (run-as user, secret values); see server/runas.py.
        self.prepare_order: Callable[[LaunchOrder], LaunchOrder] | None = None
        self.resync_seconds = resync_seconds
        self.wake_socket = wake_socket
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._launched: set[tuple[str, int]] = set()
        self._cancelled: set[tuple[str, int]] = set()
        #: The last "why it does not start" an engine gave per attempt, so each change is one event.
        self._pending: dict[tuple[str, int], tuple[str, ...]] = {}
        #: Sticky reservations (job -> node) carried between planning passes.
        self._reservations: dict[str, str] = {}
        self._threads: list[threading.Thread] = []
        self.passes = 0
        #: How long the last scheduling step took (``/metrics``, through server/usage_sampler.py); None: no pass yet.
        self.schedule_seconds: float | None = None
        #: Finished jobs older than this leave the hot tables (``history.hotSeconds``; None: never).
        self.history_hot_seconds: float | None = None
        self._history_due = 0.0
        self._expiry_due = 0.0

    # -- control -------------------------------------------------------------
    def wake(self, message: bytes = WAKE_ANY) -> None:
        """Run a pass now; :data:`WAKE_EXPERIMENTS` also makes controllers with a ``poke`` look again."""
        if message == WAKE_EXPERIMENTS:
            for controller in self.controllers:
                poke = getattr(controller, "poke", None)
                if poke is not None:
                    poke()
        self._wake.set()

    def start(self) -> None:
        loop = threading.Thread(target=self._run, name="reconcile", daemon=True)
        self._threads.append(loop)
        if self.wake_socket:
            listener = threading.Thread(target=self._listen, name="wake", daemon=True)
            self._threads.append(listener)
        for thread in self._threads:
            thread.start()

    def add_thread(self, target: Callable[[threading.Event], None], name: str) -> None:
        """Run ``target(stop_event)`` beside the loop: started by :meth:`start`, asked to end by :meth:`stop`
        (the usage sampler and the webhook sender live with the loop, in the controller)."""
        self._threads.append(threading.Thread(target=target, args=(self._stop,), name=name, daemon=True))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.wake_socket:  # the listener wakes now, not at its next 0.5 s receive timeout
            send_wake(self.wake_socket)
        for thread in self._threads:
            thread.join(timeout=5)

    def _listen(self) -> None:
        """Supervisors send a datagram when an attempt starts or ends: react at once."""
        path = self.wake_socket
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(0.5)
            while not self._stop.is_set():
                try:
                    self.wake(sock.recv(64))
                except socket.timeout:
                    continue
                except OSError:
                    return

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.reconcile_once()
            except Exception:  # noqa: BLE001 - the loop must outlive any single failure
                log.exception("reconcile pass failed; retrying")
                self._stop.wait(0.5)
            self._wake.wait(self.resync_seconds)

    # -- one pass ------------------------------------------------------------
    def reconcile_once(self) -> None:
        self.passes += 1
        active = self.store.active_attempts()
        still_active = self._observe(active)
        self._cancel(still_active)
        for controller in self.controllers:
            controller.reconcile()
        started = time.monotonic()
        self._schedule(still_active)
        self.schedule_seconds = time.monotonic() - started
        self._archive_history()
        self._delete_expired()

    def _archive_history(self) -> None:
        """Move a batch of old finished jobs' attempts and events to the archive tables (store.archive_history).

        Last in the pass, so scheduling never waits for it; a full batch means more is due, so the next pass
        takes another, otherwise the next look is :data:`HISTORY_INTERVAL_SECONDS` later.
        """
        if self.history_hot_seconds is None or self.clock() < self._history_due:
            return
        moved = self.store.archive_history(now=self.clock(), hot_seconds=self.history_hot_seconds,
                                           limit=HISTORY_BATCH)
        self._history_due = self.clock() + (0.0 if moved >= HISTORY_BATCH else HISTORY_INTERVAL_SECONDS)

    def _delete_expired(self) -> None:
        """Delete finished jobs past their ``ttlSecondsAfterFinished`` (records, then attempt folders: the order
        ``kubetrain delete`` keeps); looked for every :data:`EXPIRY_INTERVAL_SECONDS`, a batch at a time."""
        if self.clock() < self._expiry_due:
            return
        names = self.store.expired_jobs(now=self.clock(), limit=HISTORY_BATCH)
        if names:  # kept while a queued job's dependsOn still names it: deleting it would doom that job
            waited_for = self.store.waited_for()
            names = [n for n in names if n not in waited_for]
        for name in names:  # one at a time: a job deleted meanwhile (kubetrain delete) must not stop the others
            try:
                numbers = self.store.delete_jobs([name]).get(name, [])
            except (ConflictError, NotFoundError):
                continue
            self.engine.forget_attempts(name, numbers)
        self._expiry_due = self.clock() + (0.0 if len(names) >= HISTORY_BATCH else EXPIRY_INTERVAL_SECONDS)

    def _observe(self, active: list[ActiveAttempt]) -> list[ActiveAttempt]:
        # Called with no active attempt too: an engine may tidy up after ended ones (Kubernetes deletes
        # the Jobs whose end is recorded), and the last job of a burst must not leave its Job behind.
        by_key = {(a.job, a.number): a for a in active}
        ended: list[tuple[str, int, Outcome]] = []
        started: list[tuple[str, int, AttemptHandle, float, tuple[str, ...]]] = []
        pending: list[tuple[str, int, str]] = []
        now = self.clock()
        for obs in self.engine.observe(active):
            key = (obs.job, obs.number)
            attempt = by_key[key]
            if obs.phase is Phase.ENDED and obs.outcome is not None:
                if attempt.state == AttemptState.STARTING.value and obs.started_at:
                    started.append((obs.job, obs.number, obs.handle, obs.started_at, obs.notes))
                ended.append((obs.job, obs.number, obs.outcome))
            elif obs.phase is Phase.RUNNING and attempt.state == AttemptState.STARTING.value:
                started.append((obs.job, obs.number, obs.handle, obs.started_at or now, obs.notes))
            elif obs.phase is Phase.STARTING and obs.notes and self._pending.get(key) != obs.notes:
                self._pending[key] = obs.notes
                pending.append((obs.job, obs.number, "; ".join(obs.notes)))
            elif obs.phase is Phase.RELAUNCH and key not in self._launched:
                self._launch(LaunchOrder(attempt.job, attempt.number, attempt.token, attempt.spec,
                                         attempt.node or "", attempt.gpus, owner=attempt.owner,
                                         replicas=attempt.replicas))
        self.store.record_pending(pending, now=now)
        self.store.mark_running_many(started)  # one transaction for every start of this pass
        if ended:
            self.store.finish_attempts(ended, now=now)
            for job, number, _ in ended:
                self._launched.discard((job, number))
                self._cancelled.discard((job, number))
                self._pending.pop((job, number), None)
        done = {(j, n) for j, n, _ in ended}
        return [a for a in active if (a.job, a.number) not in done]

    def _cancel(self, active: list[ActiveAttempt]) -> None:
        """Stop, once each, attempts whose job was cancelled, trials past their early-stop grace, and preemption
        victims (``preempt_requested_at``: the engine's stop is SIGTERM, then SIGKILL after the grace period, so
        the program can save a checkpoint; the store records the end as ``Preempted``)."""
        now = self.clock()
        for attempt in active:
            key = (attempt.job, attempt.number)
            overdue = attempt.stop_requested_at is not None and now - attempt.stop_requested_at >= EARLY_STOP_GRACE_SECONDS
            preempted = attempt.preempt_requested_at is not None
            if (attempt.cancel_requested or overdue or preempted) and key not in self._cancelled:
                self.engine.cancel(attempt)
                self._cancelled.add(key)

    def _schedule(self, active: list[ActiveAttempt]) -> None:
        now = self.clock()
        queued = self.store.queued(now=now)
        if not queued:
            return
        previous = {req.key: reason for req, reason in queued}
        requests = [replace(req, reserved_node=self._reservations.get(req.key)) for req, _ in queued]
        requests, held, doomed = self._dependencies(requests)
        usage = (fair_keys(self.store.usage(now=now), self.store.user_teams(), self.team_shares)
                 if self.fair_share else None)
        situation = Situation(queues=self.store.queue_specs(), running=running_jobs(active), now=now,
                              preemption=self.preemption)
        decisions = plan(requests, free_capacity(self.engine.nodes(), active), fair_share=self.fair_share,
                         usage=usage, situation=situation)
        decisions.waiting.extend(held)
        decisions.unschedulable.extend(doomed)
        self._reservations = {w.key: w.reserved_node for w in decisions.waiting if w.reserved_node}
        orders = self.store.commit_plan(decisions, previous, now=now)  # victims are marked in it too
        if decisions.preemptions:  # the next pass's _cancel stops them: now, not a resync later
            self._wake.set()
        for order in orders:
            self._launch(order)

    def _dependencies(self, requests: list[JobRequest]) -> tuple[list[JobRequest], list[Waiting], list[Unschedulable]]:
        """Split off the jobs whose ``dependsOn`` is open (they wait) or can never be met (they fail)."""
        if not any(r.depends_on for r in requests):
            return requests, [], []
        states = self.store.job_states(job for r in requests for job, _ in r.depends_on)
        ready, held, doomed = [], [], []
        for request in requests:
            verdict = judge(request.depends_on, states) if request.depends_on else Ready()
            if isinstance(verdict, Hold):
                held.append(Waiting(request.key, verdict.reason))
            elif isinstance(verdict, Doomed):
                doomed.append(Unschedulable(request.key, verdict.reason, cause=Reason.DEPENDENCY_FAILED.value))
            else:
                ready.append(request)
        return ready, held, doomed

    def _launch(self, order: LaunchOrder) -> None:
        key = (order.job, order.number)
        self._launched.add(key)
        try:
            if self.prepare_order is not None:
                order = self.prepare_order(order)  # whom it runs as, its secrets: decided at each launch
            self.engine.launch(order)
        except Exception as exc:  # noqa: BLE001 - a failed launch ends the attempt, visibly
            log.exception("launch of %s attempt %s failed", order.job, order.number)
            self.store.finish_attempts(
                [(order.job, order.number, Outcome(Reason.LAUNCH_FAILED, f"could not launch: {exc}"))],
                now=self.clock(),
            )
