"""Progress of a reproduce run: one line per finished stage with the overall state.

``[12/42] ######----------------  29%  done train-at-s1 (41.2 s)  elapsed 5m12s  ETA 10m30s``

The ETA is the stages still to run (those planned now; stages that appear after a decision,
such as the students after the teacher choice, are counted once they are planned) times the
mean time of their kind measured in this call (a kind not yet measured: the mean of every
stage measured), divided by the workers that run stages side by side. It says nothing before
the first stage of this call has finished.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable

BAR = 24  # characters of the bar


def clock_text(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``; ``9`` -> ``9s``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """The overall state of one ``execute`` call (`logitscope.plan.dag.execute`).

    Args:
        workers: stages that run side by side (the local pool's ``--jobs``; 1 otherwise).
        clock: seconds (``time.perf_counter``; a test passes its own).
    """

    def __init__(self, workers: int = 1, clock: Callable[[], float] = time.perf_counter) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: expected at least 1")
        self.workers = workers
        self.clock = clock
        self.t0 = clock()
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.total = 0
        self.finished = 0
        self.todo: list[str] = []  # kinds of the stages still to run
        self.pending = 0

    def plan(self, total: int, finished: int, todo_kinds: Iterable[str], pending: int = 0) -> None:
        """The plan as built for the next wave: ``total`` selected stages, ``finished`` of them
        done (or failed), the kinds of those still to run, and groups still ``pending``."""
        self.total, self.finished, self.todo, self.pending = total, finished, list(todo_kinds), pending

    def eta(self) -> float | None:
        """Seconds left by the rule of the module docstring, or None before any measurement."""
        measured = [s for v in self.seconds.values() for s in v]
        if not measured:
            return None
        overall = sum(measured) / len(measured)
        by_kind = {k: sum(v) / len(v) for k, v in self.seconds.items()}
        return sum(by_kind.get(k, overall) for k in self.todo) / self.workers

    def stage_done(self, name: str, kind: str, seconds: float, error: str | None = None) -> str:
        """Record a finished stage; the progress line to log."""
        self.seconds[kind].append(seconds)
        self.finished += 1
        if kind in self.todo:
            self.todo.remove(kind)
        total = max(self.total, self.finished)
        filled = round(BAR * self.finished / total) if total else BAR
        bar = "#" * filled + "-" * (BAR - filled)
        what = f"failed {name}" if error else f"done {name}"
        eta = self.eta()
        parts = [
            f"[{self.finished}/{total}] {bar} {100 * self.finished / total if total else 100:3.0f}%",
            f"{what} ({seconds:.1f} s)",
            f"elapsed {clock_text(self.clock() - self.t0)}",
        ]
        if eta is not None and self.todo:
            later = f" + {self.pending} group(s) not yet planned" if self.pending else ""
            parts.append(f"ETA {clock_text(eta)}{later}")
        return "  ".join(parts)


__all__ = ["Progress", "clock_text"]
