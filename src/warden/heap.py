"""Keep the cyclic garbage collector's passes off the decision path.

A server process imports a great deal at start — numpy, scikit-learn, SciPy, pydantic models,
compiled rules, the route table — and never frees it. CPython's full collection walks every
tracked object each time, so those passes grew with the start-up heap and landed inside
requests as pauses of a hundred milliseconds and more (`bench_http.py`: p99 of ~150 ms, and a
third of the throughput). Freezing the heap once start-up is done moves those objects out of
the collector's view for good; what requests allocate is still collected as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def freeze_startup_heap() -> None:
    """Collect what start-up left as garbage, then exempt the rest from future collections.

    Call once, when the process has loaded everything it will keep. Never in tests or
    libraries that build many apps: frozen objects are not freed while the process lives.
    """
    gc.collect()
    gc.freeze()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector while building many objects that form no cycles (a batch of
    decisions, a replay's rows): it would otherwise walk the growing heap again and again,
    with nothing to free. It runs again, as due, once the batch is built."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
