"""Store part for fair share with memory (mixed into :class:`~kubetrain.store.store.Store`).

The arithmetic is core/fairshare.py's; here only reading and writing the
decayed totals.  A charge is written in the transaction that records the
attempt's end (``charge_usage`` takes that session), so an end is charged
exactly once, even across a master restart.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from kubetrain.core.fairshare import Usage
from kubetrain.store.models import UsageRow


class UsageStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    usage_half_life: float  # set by Store (``scheduling.halfLife``): this part only applies it

    def charge_usage(self, s: Session, owner: str, cpu_seconds: float, gpu_seconds: float, *, now: float) -> None:
        """Add an ended attempt's allocation to ``owner``'s decayed usage, in the caller's transaction."""
        if not owner or (cpu_seconds <= 0 and gpu_seconds <= 0):
            return
        row = s.get(UsageRow, owner)
        before = Usage(row.cpu_seconds, row.gpu_seconds, row.at) if row is not None else Usage(at=now)
        after = before.charged(cpu_seconds, gpu_seconds, now, self.usage_half_life)
        if row is None:
            s.add(UsageRow(owner=owner, cpu_seconds=after.cpu_seconds, gpu_seconds=after.gpu_seconds, at=after.at))
        else:
            row.cpu_seconds, row.gpu_seconds, row.at = after.cpu_seconds, after.gpu_seconds, after.at

    def add_usage(self, owner: str, cpu_seconds: float, gpu_seconds: float, *, now: float) -> None:
        """Charge ``owner`` outside an attempt's end (an admin's correction; tests inject history with it)."""
        with self.session() as s:
            self.charge_usage(s, owner, cpu_seconds, gpu_seconds, now=now)
            s.commit()

    def usage(self, *, now: float) -> dict[str, Usage]:
        """Every submitter's usage as it counts at ``now``."""
        with self.session() as s:
            rows = s.scalars(select(UsageRow)).all()
        return {r.owner: Usage(r.cpu_seconds, r.gpu_seconds, r.at).decayed(now, self.usage_half_life) for r in rows}
