"""Fair share with memory: what each submitter ran, decayed over time, orders the queue within a priority.

Round-robin over who has jobs running (``core/planning.py``, ``fair_share``)
forgets everything the moment a job ends: with whole-node jobs it falls back
to first come, first served, and a user who held the cluster all yesterday
ties with a colleague who held nothing.  So every attempt that ends charges
its submitter what it held: CPU-seconds, and GPU-seconds weighted by
:data:`GPU_WEIGHT` (a GPU is the scarcer thing), as Slurm's fair-share
factor counts allocated, not used, resources.  The charge decays with a
half-life (``scheduling.halfLife``, Slurm's default 7 days), so last month's
use counts little and yesterday's counts most.

How it orders: jobs of equal priority keep taking turns by submitter (turn =
that submitter's running attempts + the job's place among their queued
ones); within a turn, the submitter with the smaller decayed usage goes
first, then submit order.  So among two users' first jobs, the one who ran
less recently goes first, whole-node jobs included, and nobody's flood
stands in front of anyone's single job.

Teams (Slurm's Fair Tree): usage first counts for the submitter's **team**
(``kubetrain user add --team``), divided by the team's share
(``scheduling.shares``; 1 when not listed), so a team that ran less for its
share goes before one that ran more, and within a team the member who ran
less goes first.  A user without a team is a team of one with share 1, so a
master without teams orders exactly as by each submitter's own usage.
:func:`fair_keys` folds that tree into one float per submitter, which is all
the planner's ``usage`` argument takes: it need not know about teams.

Pure: no clock, no IO.  The store keeps the decayed totals
(``store/usage.py``) and the users' teams, the reconcile loop passes them to
the planner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

#: CPU-seconds one GPU-second counts as (Slurm's TRESBillingWeights often weigh a GPU as several cores).
GPU_WEIGHT = 8.0
#: Slurm's PriorityDecayHalfLife default.
DEFAULT_HALF_LIFE_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Usage:
    """One submitter's decayed usage, as of ``at``."""

    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    at: float = 0.0

    def decayed(self, now: float, half_life: float) -> Usage:
        """This usage as it counts at ``now`` (never grows when read; a clock that went back decays nothing)."""
        factor = math.pow(0.5, max(now - self.at, 0.0) / half_life) if half_life > 0 else 1.0
        return Usage(self.cpu_seconds * factor, self.gpu_seconds * factor, max(now, self.at))

    def charged(self, cpu_seconds: float, gpu_seconds: float, now: float, half_life: float) -> Usage:
        """Decayed to ``now``, then this attempt's allocation added."""
        base = self.decayed(now, half_life)
        return Usage(base.cpu_seconds + max(cpu_seconds, 0.0), base.gpu_seconds + max(gpu_seconds, 0.0), base.at)

    @property
    def score(self) -> float:
        """One number to order by: CPU-seconds plus weighted GPU-seconds."""
        return self.cpu_seconds + GPU_WEIGHT * self.gpu_seconds


def attempt_charge(cpu_millis: int, gpus: int, started_at: float | None, finished_at: float) -> tuple[float, float]:
    """(CPU-seconds, GPU-seconds) an attempt held from its start to its end (nothing if it never started)."""
    if started_at is None:
        return 0.0, 0.0
    seconds = max(finished_at - started_at, 0.0)
    return seconds * cpu_millis / 1000.0, seconds * gpus


#: A team's share when ``scheduling.shares`` does not list it, and a teamless user's.
DEFAULT_SHARE = 1.0


@dataclass(frozen=True, slots=True)
class ShareLine:
    """One submitter's place in the fair-share tree: what ``kubetrain share`` shows, and what orders them."""

    owner: str
    #: None: no team (a team of one, share 1).
    team: str | None
    #: The team's share (``scheduling.shares``).
    share: float
    usage: Usage
    #: The decayed score of the whole team (the submitter's own for a teamless one).
    team_score: float
    #: ``team_score / share``: what orders the teams.
    team_normalized: float
    #: The order key the planner gets (:func:`fair_keys`): 0.0 for nobody-in-the-team-ran, then 1.0, 2.0, ...
    key: float
    running: int = 0


def _group(owner: str, teams: Mapping[str, str | None]) -> tuple[str, str]:
    """The fair-share group: a named team, or a teamless owner alone (tagged, so a user named like a team
    never joins it)."""
    team = teams.get(owner)
    return ("team", team) if team else ("user", owner)


def _rounded(value: float) -> float:
    return float(f"{value:.12g}")


def share_lines(usage: Mapping[str, Usage], teams: Mapping[str, str | None], shares: Mapping[str, float],
                running: Mapping[str, int] | None = None) -> list[ShareLine]:
    """Every submitter with usage, a team or jobs running, in fair-share order: fewest running first (the turn,
    as core/planning.py counts it), then the team's usage for its share, then their own usage, then by name.

    Teams whose usage per share ties are merged (as Slurm's Fair Tree does): their members then go by their
    own usage.  Owners whose (team usage, own usage) are equal get the same key, so the planner still breaks their tie by
    submit order rather than by name.  A key of 0.0 means neither they nor their team ran anything (decayed):
    the same as an owner missing from the keys, which the planner treats as 0.0.
    """
    running = running or {}
    owners = set(usage) | {o for o, t in teams.items() if t} | {o for o, n in running.items() if n}
    empty = Usage()
    team_score: dict[tuple[str, str], float] = {}
    for owner in owners:
        group = _group(owner, teams)
        team_score[group] = team_score.get(group, 0.0) + usage.get(owner, empty).score
    lines: list[ShareLine] = []
    for owner in owners:
        group = _group(owner, teams)
        share = float(shares.get(group[1], DEFAULT_SHARE)) if group[0] == "team" else DEFAULT_SHARE
        share = share if share > 0 else DEFAULT_SHARE  # the settings refuse it; a caller's mapping might not
        score = team_score[group]
        lines.append(ShareLine(owner=owner, team=group[1] if group[0] == "team" else None, share=share,
                               usage=usage.get(owner, empty), team_score=score, team_normalized=score / share,
                               key=0.0, running=running.get(owner, 0)))
    # To 12 significant digits, so that sums of decayed floats that differ only in their last bits still tie.
    tier = {line.owner: (_rounded(line.team_normalized), _rounded(line.usage.score))
            for line in lines if line.team_score > 0}
    ranks = {t: float(i) for i, t in enumerate(sorted(set(tier.values())), start=1)}
    lines = [replace(line, key=ranks[tier[line.owner]]) if line.owner in tier else line for line in lines]
    return sorted(lines, key=lambda line: (line.running, line.key, line.owner))


def fair_keys(usage: Mapping[str, Usage], teams: Mapping[str, str | None],
              shares: Mapping[str, float]) -> dict[str, float]:
    """Each submitter's fair-share order key for ``core.planning.plan(..., usage=...)``: lower goes first.

    Teams by usage per share, then members by their own usage (see :func:`share_lines`); an owner with no
    usage whose team has none gets 0.0, as does anyone left out.
    """
    return {line.owner: line.key for line in share_lines(usage, teams, shares)}


def share_order(usage: Mapping[str, Usage], running: Mapping[str, int],
                teams: Mapping[str, str | None] | None = None, shares: Mapping[str, float] | None = None) -> list[str]:
    """Submitters in the order their next job would go among equal priorities: fewest running first (the turn,
    as core/planning.py counts it), then their fair key (team, then own usage), then by name."""
    return [line.owner for line in share_lines(usage, teams or {}, shares or {}, running)]
