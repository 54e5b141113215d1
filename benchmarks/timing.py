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


def take_turns(contenders, rounds):
    """Calls each of `contenders` (name -> a callable that returns a time) once per round, in turn, so
    that a slow spell of the machine falls on all of them; returns each one's median over the rounds."""
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, measure in contenders.items():
            times[name].append(measure())
    return {name: statistics.median(values) for name, values in times.items()}
