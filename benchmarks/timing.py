"""The timing loops the benchmarks share."""

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


def milliseconds(seconds):
    """`seconds` as milliseconds for a table: one decimal from 1 ms up and two significant digits below, so that
    an operation of a few microseconds prints as 0.0042 rather than 0.0.

    >>> [milliseconds(s) for s in (2.5, 0.0123, 4.2e-6)]
    ['2500.0', '12.3', '0.0042']
    """
    ms = 1000 * seconds
    return f"{ms:.1f}" if ms >= 1 else f"{ms:.2g}"


def take_turns(contenders, rounds):
    """Calls each of `contenders` (name -> a callable that returns a time) once per round, in turn, so
    that a slow spell of the machine falls on all of them; returns each one's median over the rounds."""
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, measure in contenders.items():
            times[name].append(measure())
    return {name: statistics.median(values) for name, values in times.items()}
