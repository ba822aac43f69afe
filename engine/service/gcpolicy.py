"""The garbage collector's settings while an engine runs.

The engine allocates a handful of container objects per run and step (runs, steps, contexts,
coroutines, dicts) and frees nearly all of them by reference counting: a finished run breaks
its own run <-> step cycle (``Run.release``). The cyclic collector still counts every
allocation, and with its default gen0 threshold (700) it runs a young collection every few dozen
runs, and a full one whenever enough objects survive -- which they do with storage on, where the
writer keeps every run, step and symbol changed since its last commit until that commit is
written. Measured on the engine benchmark's steady workload with storage on: the collector took
about a third of the event loop's time, and these settings raised the throughput by half.

So, for the length of a session (and restored after it, for embedders and tests):

* ``gc_freeze``: everything allocated before the engine starts (modules, config, compiled
  workflows) moves to the permanent generation, so full collections stop re-walking it;
* ``gc_gen0_threshold``: young collections run every that many allocations instead of 700.
  0 leaves the collector's thresholds as they are.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["tuned_collector"]


@contextlib.contextmanager
def tuned_collector(gen0_threshold: int, freeze: bool) -> Iterator[None]:
    before = gc.get_threshold()
    if freeze:
        gc.collect()  # what is garbage now is not frozen with the rest
        gc.freeze()
    if gen0_threshold > 0:
        gc.set_threshold(gen0_threshold, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if freeze:
            gc.unfreeze()
