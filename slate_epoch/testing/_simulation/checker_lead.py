"""Checks 8 and 9: the promises of ``lead`` (see ``check_history``).

8. **Holders in turn**: every leader that entered holds a claim of its own, at an epoch nobody
   else entered with, and the leaders' acknowledged updates, in manifest id order, never go back
   to an older epoch (no two holders' acknowledged writes interleave against the epochs).
9. **Succession**: a released or stopped holder is succeeded by a waiting standby within the
   bound its settings promise, whenever the standby could see the store without trouble.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass

from ..._lease import Lease
from ..._manifest import Manifest
from .checker_log import Fail
from .config import LEASES
from .history import History, HostRecord, LeadRecord, lease_of
from .leaders import ENDS, STOPPED

__all__ = ["check_lead"]

_SLACK = 1e-6  # simulated seconds of float rounding allowed on a bound


def check_lead(
    history: History,
    lineage: dict[int, Manifest],
    ids: list[int],
    first_at_epoch: dict[tuple[str, int], int],
    fail: Fail,
) -> None:
    if not history.leads:
        return
    _check_holders(history, lineage, first_at_epoch, fail)
    _check_succession(history, lineage, ids, fail)


# -- check 8 -----------------------------------------------------------------------------------


def _check_holders(
    history: History,
    lineage: dict[int, Manifest],
    first_at_epoch: dict[tuple[str, int], int],
    fail: Fail,
) -> None:
    """Check 8. Every life ended in one of ``lead``'s outcomes (``FencedError`` and
    ``LeaseLostError`` only after entering, ``ClaimTimeoutError`` only with a timeout, at it).
    Every leader that entered holds its own claim: the version that first set its epoch
    carries its claim id, and it made that claim (the claim's owner is the life), at or below
    the manifest its handle names; no two leaders entered at one epoch. Ordered by the manifest
    each landed at, the leaders' acknowledged updates never go back to an older epoch, nor from
    one holder to another of the same epoch; and each landed at a version whose claim of the
    role is its own - no newer claim, a leader's or a plain one, came before it. (That each is
    in the history exactly once, where ``update`` said, is check 3's, for every update.)"""
    role = history.lead_role
    entered_at: dict[int, LeadRecord] = {}
    for record in history.leads:
        who = f"{record.actor} (lead of {role!r})"
        if record.end in ("running", "cancelled"):
            if not history.hung:
                fail(8, f"{who} never ended")
        elif record.end not in ENDS and record.end not in STOPPED:
            fail(8, f"{who} ended in {record.end}: {record.detail}")
        elif record.end in ("FencedError", "LeaseLostError", "body error", "released"):
            if not record.entered:
                fail(8, f"{who} ended in {record.end} without ever leading")
        elif record.end == "ClaimTimeoutError":
            waited = record.end_time - record.start_time
            if record.entered or record.timeout is None or abs(waited - record.timeout) > _SLACK:
                fail(
                    8,
                    f"{who} ended in ClaimTimeoutError after {waited:.6f} s (timeout "
                    f"{record.timeout}, entered: {record.entered})",
                )
        if not record.entered:
            continue
        first = first_at_epoch.get((role, record.epoch))
        claim = None if first is None else lineage[first].claim(role)
        if claim is None or first is None:
            fail(8, f"{who} led at epoch {record.epoch}, which no version of the history sets")
            continue
        if claim.claim_id != record.claim_id or claim.owner != record.actor:
            fail(
                8,
                f"{who} led at epoch {record.epoch}, but that epoch's claim (manifest {first}) "
                f"is {claim.owner or 'an unnamed claimant'}'s, not a claim of its own",
            )
        elif first > record.manifest_id:
            fail(
                8,
                f"{who} led at epoch {record.epoch} with manifest {record.manifest_id}, below "
                f"its claim at {first}",
            )
        twin = entered_at.setdefault(record.epoch, record)
        if twin is not record:
            fail(8, f"{twin.actor} and {record.actor} both led {role!r} at epoch {record.epoch}")

    id_of_write = {m.write_id: manifest_id for manifest_id, m in lineage.items()}
    claims = sorted(
        (manifest_id, epoch)
        for (claim_role, epoch), manifest_id in first_at_epoch.items()
        if claim_role == role
    )
    acknowledged: list[tuple[int, int, str, int]] = []  # (manifest id, epoch, actor, op)
    for record in history.leads:
        for index in record.updates:
            op = history.ops[index]
            written = id_of_write.get(op.write_id) if op.outcome == "ok" else None
            if written is not None:  # else check 3 reports the acknowledged update missing
                acknowledged.append((written, op.epoch, record.actor, index))
    acknowledged.sort()
    previous: tuple[int, int, str, int] | None = None
    for manifest_id, epoch, actor, index in acknowledged:
        holder = lineage[manifest_id].claim(role)
        if holder is None or holder.epoch != epoch:
            newer = [mid for mid, e in claims if epoch < e and mid <= manifest_id]
            fail(
                8,
                f"op{index} ({actor}): an acknowledged update of epoch {epoch} landed at "
                f"manifest {manifest_id}, after the newer claim of epoch "
                f"{'?' if holder is None else holder.epoch} (manifest "
                f"{newer[0] if newer else '?'}): an older holder wrote after a newer claim",
            )
        if previous is not None:
            p_manifest, p_epoch, p_actor, p_index = previous
            if epoch < p_epoch or (epoch == p_epoch and actor != p_actor):
                fail(
                    8,
                    f"op{index} ({actor}, epoch {epoch}) acknowledged an update at manifest "
                    f"{manifest_id}, after op{p_index} ({p_actor}, epoch {p_epoch}) at "
                    f"{p_manifest}: two holders' acknowledged writes interleave",
                )
        previous = manifest_id, epoch, actor, index


# -- check 9 -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Version:
    """A version of the role's lease: when it landed (call time and seq), and what it says."""

    time: float
    seq: int
    lease: Lease

    def describe(self) -> str:
        lease = self.lease
        if lease.claiming:
            return f"claiming by {lease.owner}"
        state = "released" if lease.released else f"renewal {lease.renewals}"
        return f"epoch {lease.epoch}, {state}, by {lease.owner}"


class _Hosts:
    """What the succession check needs of the leaders' processes."""

    def __init__(self, history: History) -> None:
        self.hosts = history.hosts
        self.faults = {name: sorted(host.faults) for name, host in self.hosts.items()}
        self.calls = {name: sorted(host.calls) for name, host in self.hosts.items()}

    def trouble(self, name: str, since: float) -> float:
        """When the process ``name`` first meets trouble from ``since`` on: a fault, a pause,
        its death (infinity: never)."""
        host: HostRecord = self.hosts[name]
        first = host.died
        faults = self.faults[name]
        at = bisect.bisect_left(faults, since)
        if at < len(faults):
            first = min(first, faults[at])
        for paused, resumed in host.pauses:
            if resumed >= since:
                first = min(first, max(paused, since))
        return first

    def latency(self, name: str, since: float, until: float) -> float:
        """The most time the requests of ``name`` can have taken within [since, until]: those
        answered then, and one more still in flight at ``until`` (a request - or several sent
        at once - has run at most one latency before it is answered)."""
        calls = self.calls[name]
        count = bisect.bisect_right(calls, until) - bisect.bisect_left(calls, since)
        return (count + 1) * self.hosts[name].max_latency

    def conflicts(self, name: str, since: float, until: float) -> int:
        """Creates of ``name`` that found their id taken within [since, until]."""
        found = sorted(self.hosts[name].conflicts)
        return bisect.bisect_right(found, until) - bisect.bisect_left(found, since)


def _check_succession(
    history: History, lineage: dict[int, Manifest], ids: list[int], fail: Fail
) -> None:
    """Check 9. The obligations are stated on the lease object's versions: while a version
    stands, the lease must change again (a renewal, a release, a standby's ``claiming`` swap, the
    lease of its claim) within a bound, wherever that bound is honest. With ``P`` a standby's
    ``poll_every``, ``L`` its lease, ``V.lease`` the lease the version advertises, and *lat*
    the most time the standby's (or claimant's) own requests can have taken in the window - the
    calls its process had answered by then, and one more in flight, each at its process's most
    latency:

    - a **released** version, standing from ``t``: a standby waiting from ``t0 = max(t, its
      start)`` takes over - swaps in its ``claiming`` lease - by ``t0 + P + lat``: between two
      looks it sleeps at most ``P``, and it takes over on the first look that sees the release
      (the look, its read of the newest manifest and its swap are requests, nothing else);
    - any other version (a holder's lease, or another standby's ``claiming`` one): by
      ``t0 + P + max(L, V.lease) + lat``: it sees the version within ``P`` of ``t0`` (plus
      requests), and takes over ``max(L, V.lease)`` after that, by its own clock. A holder
      that is alive renews long before; one that crashed, is paused, or whose store fails
      does not, and is succeeded;
    - a **claiming** version of a standby that won the swap: it claims and writes its claim's
      lease (it enters) by ``t + lat + c * B``, where ``c`` counts its creates that found their
      id taken meanwhile (each costs its claim one backoff, of at most ``B``).

    A bound is checked only where it is honest: the standby (claimant) met no fault - no
    injected error, lost response, late create, outage, nor a call abandoned midway - from one
    lease before ``t0`` (a retry begun then may still be sleeping; for a claimant, from its one
    request before ``t``) until the bound, was not paused, killed or stopped, and was still
    waiting; and, for a standby, no claim of the role that no lease speaks for - a plain claim
    (an operator's, a writer's), or a leader's whose lease never landed - came after the newest
    claim a lease speaks for, up to the bound: standbys rightly wait such a holder out for a lease
    from first seeing its claim. Faults elsewhere - the holder's, other standbys' - never make a
    takeover late: they only change the lease sooner."""
    role = history.lead_role
    hosts = _Hosts(history)
    versions = _versions(history, role)
    if not versions:
        return
    leads = {record.actor: record for record in history.leads}
    claim_times = _claims(history, lineage, ids, role, versions)
    end_of_run = history.end_time
    counts = history.counts

    def unled_claim_between(start: float, end: float) -> bool:
        """Whether a claim no lease speaks for landed after the newest claim one speaks for at or
        before ``start``, and at or before ``end``."""
        since = max((at for at, led in claim_times if led and at <= start), default=-math.inf)
        return any(not led and since < at <= end for at, led in claim_times)

    def waiting_until(record: LeadRecord) -> float:
        until = record.entered_time if record.entered else record.end_time
        return end_of_run if math.isnan(until) else min(until, end_of_run)

    # When each life won the lease (its first claiming version): from then on it is claiming,
    # not looking - a claim slowed by conflicts can outlast a lease, and others take over - so
    # it is held to the claimant's bound, never to a standby's again.
    won_at: dict[str, float] = {}
    for version in versions:
        if version.lease.claiming:
            won_at.setdefault(version.lease.owner, version.time)

    def left(record: LeadRecord) -> float:
        """When ``record`` stopped waiting other than by entering (it entered: infinity, as its
        own swap of the lease came first)."""
        return math.inf if record.entered else waiting_until(record)

    for index, version in enumerate(versions):
        nxt = versions[index + 1] if index + 1 < len(versions) else None
        changed = nxt.time if nxt is not None else math.inf
        lease = version.lease
        takeover = nxt is None or nxt.lease.owner != lease.owner or lease.released
        claimant = leads.get(lease.owner) if lease.claiming else None
        if claimant is not None:
            # The standby that won the swap claims, then writes its claim's lease.
            host = hosts.hosts[claimant.host]
            window_end = min(changed, waiting_until(claimant))
            since = version.time - host.max_latency - _SLACK
            clean = min(hosts.trouble(claimant.host, since), left(claimant), end_of_run)
            conflicts = hosts.conflicts(claimant.host, version.time, window_end)
            requests = hosts.latency(claimant.host, version.time, window_end)
            due = version.time + requests + conflicts * claimant.backoff_max
            if clean > min(changed, due):  # (a fault at the very moment is trouble)
                counts["succession:claims_checked"] += 1
                if changed > due + _SLACK:
                    fail(
                        9,
                        f"{claimant.actor} won the lease of {role!r} at {version.time:.6f} s "
                        f"(call {version.seq}) and met no trouble, but had not entered by "
                        f"{due:.6f} s ({requests:.6f} s of its requests, {conflicts} "
                        "conflict(s)); the lease "
                        + ("never changed" if nxt is None else f"changed at {changed:.6f} s"),
                    )
        for waiter in history.leads:
            if waiter.actor == lease.owner or won_at.get(waiter.actor, math.inf) <= version.time:
                continue
            start = max(version.time, waiter.start_time)
            window_end = min(changed, waiting_until(waiter))
            if start >= window_end:
                continue  # not waiting while this version stood
            wait = waiter.poll_every
            if not lease.released:
                wait += max(waiter.lease, lease.lease)
            requests = hosts.latency(waiter.host, start, window_end)
            due = start + wait + requests
            clean = min(hosts.trouble(waiter.host, start - waiter.lease), left(waiter), end_of_run)
            if clean <= min(changed, due) or unled_claim_between(start, due):
                continue  # the bound is not honest here
            if takeover:
                counts[f"succession:{'released' if lease.released else 'stopped'}_checked"] += 1
            if changed > due + _SLACK:
                what = "released" if lease.released else "not renewed"
                bound = "poll_every" if lease.released else "max(lease, its lease) + poll_every"
                fail(
                    9,
                    f"the lease of {role!r} ({version.describe()}) stood {what} from "
                    f"{version.time:.6f} s (call {version.seq}); {waiter.actor} waited without "
                    f"trouble from {start:.6f} s (lease {waiter.lease:g} s, poll "
                    f"{waiter.poll_every:g} s) but nobody took over by {due:.6f} s ({bound} + "
                    f"{requests:.6f} s of its requests); the lease "
                    + ("never changed" if nxt is None else f"changed at {changed:.6f} s"),
                )
    _count_takeovers(history, versions, leads)


def _versions(history: History, role: str) -> list[_Version]:
    key = f"{LEASES}{role}"
    versions: list[_Version] = []
    for call in history.calls:
        if call.key == key and call.result == "landed" and call.body is not None:
            lease = lease_of(key, call.body)
            if lease is not None:
                versions.append(_Version(call.time, call.seq, lease))
    return versions


def _claims(
    history: History,
    lineage: dict[int, Manifest],
    ids: list[int],
    role: str,
    versions: list[_Version],
) -> list[tuple[float, bool]]:
    """When each claim of ``role`` landed, and whether it is *led* - a version of the lease
    speaks for it, as the lease of a leader's claim does - in order: (time, led). A plain claim
    (an operator's, a writer's) is not led, nor is a leader's whose claim landed but whose lease
    never did (it found the lease taken over while it claimed, and went back to waiting)."""
    spoken = {
        (version.lease.epoch, version.lease.claim_id)
        for version in versions
        if not version.lease.claiming
    }
    time_of = {call.seq: call.time for call in history.calls}
    seq_of = {manifest_id: seq for seq, _, manifest_id in history.landings}
    claims: list[tuple[float, bool]] = []
    epoch = 0
    for manifest_id in ids:
        claim = lineage[manifest_id].claim(role)
        if claim is not None and claim.epoch > epoch:
            epoch = claim.epoch
            at = time_of.get(seq_of.get(manifest_id, -1), 0.0)
            claims.append((at, (claim.epoch, claim.claim_id) in spoken))
    claims.sort()
    return claims


def _count_takeovers(
    history: History, versions: list[_Version], leads: dict[str, LeadRecord]
) -> None:
    """Counts each leader's entry by what it took over from: a role never led, a release, a
    stalled standby's claim, or a holder that crashed, was paused, lost its store or was cut
    off, fenced..."""
    counts = history.counts
    before: defaultdict[str, _Version | None] = defaultdict(lambda: None)
    for index, version in enumerate(versions):
        if version.lease.claiming and version.lease.owner not in before:
            before[version.lease.owner] = versions[index - 1] if index else None
    for record in history.leads:
        if not record.entered:
            continue
        previous = before.get(record.actor)
        if previous is None:
            kind = "first"
        elif previous.lease.released:
            kind = "release"
        elif previous.lease.claiming:
            kind = "stalled claim"
        else:
            holder = leads.get(previous.lease.owner)
            kind = "other"
            if holder is not None:
                kind = holder.disruption or holder.end
        counts[f"takeover:{kind}"] += 1
