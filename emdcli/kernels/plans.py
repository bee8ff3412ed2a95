"""Optimal transport plans on a chain and on a tree, sparse (CPU, Numba).

Chain: the monotone (north-west corner) plan. Walking both rows left to right, the
next entry moves ``m = min(a, b)`` from source bin i (a of its mass still unsent) to target
bin j (b still unfilled); whichever is used up advances. Every step advances i or j, so a
row has at most 2N − 1 entries; the plan never crosses itself, hence it is optimal for any
convex cost of ``|x_i − x_j|``, the EMD among them.

Tree: mass stays where p and q overlap (``min(p_k, q_k)`` from k to k); the rest,
``s_k = p_k − q_k``, is matched inside the smallest subtree that holds both ends: nodes
are visited children first, each holding a list of unsent supply and one of unfilled
demand (its bins' and its children's leftovers), which it matches head to head before
passing what is left, single-signed, to its parent. Mass then crosses the edge above v
once, in one direction, ``|phi_v|`` of it: the cost is ``Σ w_v |phi_v|``, the EMD. Each
match uses up one list entry or more, so a row has at most 2N entries.

Both run twice per batch: ``*_counts`` (B,) the entries per row, then ``*_fill`` writes
row b's entries from ``offsets[b]`` on into ``out = (source, target, mass)`` (int64, int64,
the working dtype); runs of rows on threads (``kernels.threads``).
Rows are ``(P, Q, SP, SQ)``: row b moves ``SP[b]·P[b]`` onto ``SQ[b]·Q[b]`` (empty scales
are 1). Class targets need no kernel (``emdcli.flows``).
"""

import numpy as np
from numba import njit

from . import jit  # noqa: F401 (before any kernel loads)
from . import threads


def _each(rows):
    """Rows a pool thread should get (``kernels.threads.POOL_ITEMS`` values)."""
    return max(1, threads.POOL_ITEMS // max(1, rows[0].shape[1]))


@njit(cache=True, inline="always")
def _scale(S, b):
    return S[b] if S.shape[0] > 0 else 1.0


@njit(cache=True)
def _chain_row(p, q, sp, sq, source, target, mass, at):
    """The north-west plan of one row from index ``at`` on (``source`` empty: count
    only); returns the number of entries."""
    n = p.shape[0]
    write = source.shape[0] > 0
    i = j = 0
    a = sp * np.float64(p[0])
    b = sq * np.float64(q[0])
    k = 0
    while True:
        m = min(a, b)
        if m > 0.0:
            if write:
                source[at + k] = i
                target[at + k] = j
                mass[at + k] = m
            k += 1
        a -= m
        b -= m
        if a <= 0.0:
            i += 1
            if i == n:
                break
            a = sp * np.float64(p[i])
        if b <= 0.0:
            j += 1
            if j == n:
                break
            b = sq * np.float64(q[j])
    return k


def chain_counts(rows):
    """Entries per row of the chain plans (B,) int64."""
    counts = np.empty(rows[0].shape[0], dtype=np.int64)
    none = np.empty(0, dtype=np.int64)
    threads.run(_chain_runs, len(counts), (rows, counts, (none, none, np.empty(0))),
                min_items=_each(rows))
    return counts


def chain_fill(rows, offsets, out):
    """Row b's chain plan into ``out = (source, target, mass)`` from ``offsets[b]`` on."""
    threads.run(_chain_runs, rows[0].shape[0], (rows, offsets, out), min_items=_each(rows))


@njit(cache=True, nogil=True)
def _chain_runs(rows, at, out, lo, hi, slot):
    """Rows lo … hi−1: their entry counts into ``at`` (``out[0]`` empty), else their
    entries into ``out`` from ``at[b]`` on."""
    P, Q, SP, SQ = rows
    source, target, mass = out
    for b in range(lo, hi):
        k = _chain_row(P[b], Q[b], _scale(SP, b), _scale(SQ, b), source, target, mass,
                       at[b] if source.shape[0] > 0 else 0)
        if source.shape[0] == 0:
            at[b] = k


@njit(cache=True)
def _tree_row(p, q, sp, sq, tree, lists, out, at):
    """The subtree-first plan of one row from index ``at`` on (``out[0]`` empty: count
    only); returns the number of entries. lists: (4, nodes) int64 heads and tails of
    each node's supply and demand lists; ``link`` (N,) and ``left`` (N,) scratch inside."""
    parent, bin_node = tree
    source, target, mass = out
    write = source.shape[0] > 0
    n = p.shape[0]
    head_s, tail_s, head_d, tail_d = lists[0], lists[1], lists[2], lists[3]
    head_s[:] = -1
    head_d[:] = -1
    link = np.empty(n, dtype=np.int64)
    left = np.empty(n)
    k = 0
    for i in range(n):  # what stays, and each bin's surplus or deficit on its node
        pi = sp * np.float64(p[i])
        qi = sq * np.float64(q[i])
        stay = min(pi, qi)
        if stay > 0.0:
            if write:
                source[at + k] = i
                target[at + k] = i
                mass[at + k] = stay
            k += 1
        link[i] = -1
        v = bin_node[i]
        if pi > qi:
            left[i] = pi - qi
            _append(head_s, tail_s, link, v, i, i)
        elif qi > pi:
            left[i] = qi - pi
            _append(head_d, tail_d, link, v, i, i)
    for v in range(parent.shape[0] - 1, -1, -1):  # children first
        while head_s[v] >= 0 and head_d[v] >= 0:
            i, j = head_s[v], head_d[v]
            m = min(left[i], left[j])
            if write:
                source[at + k] = i
                target[at + k] = j
                mass[at + k] = m
            k += 1
            left[i] -= m
            left[j] -= m
            if left[i] <= 0.0:
                head_s[v] = link[i]
            if left[j] <= 0.0:
                head_d[v] = link[j]
        if v > 0:
            u = parent[v]
            if head_s[v] >= 0:
                _append(head_s, tail_s, link, u, head_s[v], tail_s[v])
            if head_d[v] >= 0:
                _append(head_d, tail_d, link, u, head_d[v], tail_d[v])
    return k


@njit(cache=True, inline="always")
def _append(head, tail, link, v, first, last):
    """The list ``first … last`` onto the end of node v's list."""
    if head[v] < 0:
        head[v] = first
    else:
        link[tail[v]] = first
    tail[v] = last
    link[last] = -1


def tree_counts(rows, tree):
    """Entries per row of the tree plans (B,) int64; tree = (parent, bin_node)."""
    counts = np.empty(rows[0].shape[0], dtype=np.int64)
    none = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0))
    threads.run(_tree_runs, len(counts), (rows, tree, counts, none), min_items=_each(rows))
    return counts


def tree_fill(rows, tree, offsets, out):
    """Row b's tree plan into ``out = (source, target, mass)`` from ``offsets[b]`` on."""
    threads.run(_tree_runs, rows[0].shape[0], (rows, tree, offsets, out),
                min_items=_each(rows))


@njit(cache=True, nogil=True)
def _tree_runs(rows, tree, at, out, lo, hi, slot):
    """:func:`_chain_runs` on a tree."""
    P, Q, SP, SQ = rows
    lists = np.empty((4, tree[0].shape[0]), dtype=np.int64)
    count = out[0].shape[0] == 0
    for b in range(lo, hi):
        k = _tree_row(P[b], Q[b], _scale(SP, b), _scale(SQ, b), tree, lists, out,
                      0 if count else at[b])
        if count:
            at[b] = k
