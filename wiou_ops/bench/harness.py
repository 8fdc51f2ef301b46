"""Timing harness: warm-up, interleaved rounds, robust statistics.

Kept free of TensorFlow so its statistics can be tested on known inputs.
"""

import time

import numpy as np


def interleaved_times(fns, rounds=20, warmup=3, clock=time.perf_counter):
    """Runs every callable ``rounds`` times, interleaved (A B C A B C ...).

    Each round starts with a different variant so that no variant always runs
    first after the others heated the caches. Returns {name: [seconds, ...]}.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    samples = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = clock()
            fns[name]()
            samples[name].append(clock() - start)
    return samples


def summarize(seconds):
    """Median, p20 and p80 in milliseconds, and the sample count."""
    ms = np.asarray(seconds, np.float64) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p20_ms": float(np.percentile(ms, 20)),
        "p80_ms": float(np.percentile(ms, 80)),
        "n": int(ms.size),
    }


def forward_bytes(n, pred_itemsize, true_itemsize):
    """Fewest bytes a forward must move: read y and p once."""
    return n * (pred_itemsize + true_itemsize)


def forward_backward_bytes(n, pred_itemsize, true_itemsize):
    """Fewest bytes a forward+backward must move.

    Forward reads y and p once; backward reads them again and writes the
    gradient (p's dtype): 2·n·(|y| + |p|) + n·|p|.
    """
    return 2 * n * (pred_itemsize + true_itemsize) + n * pred_itemsize
