"""What a measured phase warns about: figures that would look real but are not (a phase too
short for its CPU figures), a target rate not reached, a load generator at its limit, a busy
host. Each check returns the warning's text (None: nothing to say); the runner collects them,
and they reach the terminal, the JSON and the HTML report.
"""

from __future__ import annotations

from bench import results
from bench.cpu import OTHER_LOAD_WARNING

#: A phase shorter than this has CPU figures of a few scheduler ticks (psutil counts CPU in
#: 10 ms steps): they are left out (null) with a warning.
MIN_CPU_PHASE_S = 1.0
#: ... and so is a role that used less CPU than this during the phase.
MIN_CPU_SECONDS = 0.05
#: Warn when the open model's achieved rate is below this fraction of the target.
RATE_REACHED_FRACTION = 0.95
#: Warn when the client used more than this fraction of a core: throughput may be client-bound.
CLIENT_BOUND_UTILISATION = 0.9


def too_short_for_cpu(
    label: str, elapsed: float, cpu_seconds: dict[str, float | None]
) -> str | None:
    """Whether the phase is too short for its CPU figures; if so, ``cpu_seconds`` is emptied
    (every role None) so that no figure that only looks real is reported."""
    scant = {role: v for role, v in cpu_seconds.items() if v is not None and v < MIN_CPU_SECONDS}
    if elapsed >= MIN_CPU_PHASE_S and not scant:
        return None
    for role in cpu_seconds:
        cpu_seconds[role] = None
    what = f"{elapsed:.2f} s"
    if scant:
        what += ", " + ", ".join(f"{role} {v * 1000:.0f} ms of CPU" for role, v in scant.items())
    return (
        f"{label}: too short for CPU figures ({what}; CPU is counted in 10 ms ticks): they are "
        f"left out; measure longer (-d, or a larger -n; at least {MIN_CPU_PHASE_S:g} s and "
        f"{MIN_CPU_SECONDS * 1000:.0f} ms of CPU per role)"
    )


def rate_not_reached(label: str, run: results.RunResult, target: float | None) -> str | None:
    """The open model's achieved request rate against its target."""
    if target is None or run.requests_per_s is None:
        return None
    if run.requests_per_s >= RATE_REACHED_FRACTION * target:
        return None
    p50 = run.latency_ms.get("p50")
    latency = f", p50 {p50:,.1f} ms" if p50 is not None else ""
    return (
        f"{label}: --rate {target:g} not reached: achieved {run.requests_per_s:,.0f} req/s "
        f"({run.requests_per_s / target:.0%}){latency}; the server (or the client) is saturated "
        "and the latencies are mostly queueing"
    )


def client_bound(label: str, utilisation: float | None) -> str | None:
    if utilisation is None or utilisation <= CLIENT_BOUND_UTILISATION:
        return None
    return (
        f"{label}: the client used {utilisation:.0%} of a core; throughput may be bound by the "
        "load generator"
    )


def busy_host(label: str, share: float) -> str | None:
    if share <= OTHER_LOAD_WARNING:
        return None
    return (
        f"{label}: other processes used {share:.0%} of the host's CPU during the phase; its "
        "CPU figures are noisy (run again on a quiet host)"
    )


def few_streams(label: str, used: int, offered: int, groups: int) -> str | None:
    """Whether the workload's affinity groups, hashed onto the ``offered`` streams, leave
    half of them or more without a request: ``used`` streams carry the whole workload (a few
    empty streams are what hashing many groups gives, and change little)."""
    if used * 2 > offered:
        return None
    return (
        f"{label}: the workload's {groups:,} affinity group(s) hash onto {used} of the "
        f"{offered} streams, so the others carry nothing and fewer contexts share the work "
        "(with one stream, stream and connection are the same); a workload with more "
        "groups, or fewer -c/-s, uses every stream"
    )


def unlike_tables(label: str, small_made: int | None, reference_small: bool) -> str | None:
    """Whether the workers' zstd contexts of the phase and the in-process reference of its
    efficiency figures had unlike match tables: ``small_made`` contexts with small tables
    (None: unknown) against a reference with small tables or default ones."""
    if small_made is None or (small_made > 0) == reference_small:
        return None
    if reference_small:
        what = (
            "the in-process reference used small zstd match tables (--small-tables-from 0) "
            "but the workers gave none of the phase's contexts small ones"
        )
    else:
        what = (
            f"the workers gave {small_made:,} of the phase's zstd contexts small match tables "
            "(the server's --small-tables-from) but the in-process reference used default ones"
        )
    return f"{label}: {what}: worker_efficiency and server_efficiency compare unlike compressions"
