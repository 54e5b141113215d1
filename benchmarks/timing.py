"""The one timing loop the benchmarks share."""

import statistics
import time


def median_seconds(run, runs, warmup=0):
    """Median wall seconds of `run()` over `runs` calls, after `warmup` calls that are not timed."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
