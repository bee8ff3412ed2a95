"""Streaming statistics in bounded memory: moments and a mergeable quantile sketch.

:class:`Moments` merges (count, mean, M2, min, max) batch by batch (Chan et al.'s
pairwise update). :class:`QuantileSketch` is a log-bucket histogram (as DDSketch): a
value ``v > 0`` falls in bucket ``k = ceil(log v / log γ)``, ``γ = (1 + α)/(1 − α)``, whose
representative ``2γ^k/(γ + 1)`` is within a relative ``α`` of every value in it; negative
values mirror, zeros count apart. Both merge by addition, so parts computed apart (files,
workers) combine exactly into the same sketch.
"""

import math

import numpy as np


class Moments:
    """count, mean, population variance, min, max of the values added so far."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, v):
        """Add the finite float64 values ``v`` (1-D)."""
        if not v.size:
            return
        n, mean = v.size, float(v.mean())
        m2 = float(((v - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.min, self.max = min(self.min, float(v.min())), max(self.max, float(v.max()))

    def merge(self, other):
        """Add another part's moments (Chan et al.'s parallel update: exact up to rounding)."""
        if not other.count:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * other.count / total
        self.m2 += other.m2 + delta * delta * self.count * other.count / total
        self.count = total
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)

    @property
    def std(self):
        return math.sqrt(self.m2 / self.count) if self.count else math.nan


class _Store:
    """Counts of integer bucket keys as one dense array from ``lo`` on (grown as needed;
    a batch is one ``bincount``)."""

    def __init__(self):
        self.lo, self.counts = 0, np.zeros(0, dtype=np.int64)

    def add(self, keys, counts=None, lo=None):
        """Add ``keys`` (int64, each once), or ``counts`` of the keys ``lo, lo + 1, …``."""
        if counts is None:
            if not keys.size:
                return
            lo = int(keys.min())
            counts = np.bincount(keys - lo)
        if not counts.size:
            return
        if not self.counts.size:
            self.lo, self.counts = lo, counts.astype(np.int64)
            return
        new_lo = min(self.lo, lo)
        new_hi = max(self.lo + self.counts.size, lo + counts.size)
        if new_lo < self.lo or new_hi > self.lo + self.counts.size:
            grown = np.zeros(new_hi - new_lo, dtype=np.int64)
            grown[self.lo - new_lo:self.lo - new_lo + self.counts.size] = self.counts
            self.lo, self.counts = new_lo, grown
        self.counts[lo - self.lo:lo - self.lo + counts.size] += counts

    @property
    def total(self):
        return int(self.counts.sum())


class QuantileSketch:
    """Quantiles within a relative ``alpha`` (default 1e-4), memory 8 bytes per bucket
    between the smallest and the largest key seen (~350 000 buckets for values spanning
    30 decades)."""

    def __init__(self, alpha=1e-4):
        self.alpha = alpha
        self.log_gamma = math.log((1 + alpha) / (1 - alpha))
        self.pos, self.neg = _Store(), _Store()
        self.zeros = 0

    def _keys(self, a):
        return np.ceil(np.log(a) / self.log_gamma).astype(np.int64)

    def add(self, v):
        """Add the finite float64 values ``v`` (1-D)."""
        pos, neg = v[v > 0], v[v < 0]
        self.zeros += int(v.size - pos.size - neg.size)
        self.pos.add(self._keys(pos))
        self.neg.add(self._keys(-neg))

    def merge(self, other):
        """Add another sketch's counts (same alpha)."""
        self.pos.add(None, other.pos.counts, other.pos.lo)
        self.neg.add(None, other.neg.counts, other.neg.lo)
        self.zeros += other.zeros

    @property
    def count(self):
        return self.pos.total + self.neg.total + self.zeros

    def _value(self, key):
        return 2.0 * math.exp(key * self.log_gamma) / (math.exp(self.log_gamma) + 1.0)

    def quantile(self, q):
        """The value of rank ``round(q · (count − 1))`` (0-based), within ``alpha``."""
        rank = int(round(q * (self.count - 1)))
        n_neg = self.neg.total
        if rank < n_neg:  # the most negative values first: the largest keys of neg
            i = int(np.searchsorted(np.cumsum(self.neg.counts[::-1]), rank, side="right"))
            return -self._value(self.neg.lo + self.neg.counts.size - 1 - i)
        rank -= n_neg
        if rank < self.zeros:
            return 0.0
        rank -= self.zeros
        i = int(np.searchsorted(np.cumsum(self.pos.counts), rank, side="right"))
        return self._value(self.pos.lo + i)
