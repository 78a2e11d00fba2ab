"""Process-wide settings for a long-running worker process (the ``run`` command), set once before it starts.

Why: a worker spends its life on short-lived per-operation objects. With the interpreter's defaults the
cyclic garbage collector ran ~90 times a second in a busy worker, and about once a second a full collection
went through the whole heap (~120,000 objects, most of them the imported modules): ~9% of the process's CPU
(docs/benchmarks.md, "4. Worker cost"). Reference counting frees those objects anyway; the collector only
exists for cycles.

* ``gc.freeze()``: what exists at start (modules, classes, settings) moves to a generation the collector
  never scans again. It is never garbage while the process runs.
* a first-generation threshold of 5,000 net allocations instead of 700: at most a few thousand
  container objects of cyclic garbage wait a little longer before they are freed (~0.5 MB more peak RSS
  measured in the benchmark; the collector's share of the CPU went from ~9% to under 1%).

Log records are made lean too (``logs.lean_records``). None of this changes what the worker does or writes.
"""

from __future__ import annotations

import gc

from .logs import lean_records

YOUNG_THRESHOLD = 5_000
"""Net allocations of container objects between two collections of the youngest generation (Python: 700)."""


def tune_process() -> None:
    """Call once, right before the worker starts (imports done)."""
    lean_records()
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
