"""Constants the chain and tree kernels and their numpy twin share (no Numba here)."""

# A row is scanned again, its residual mass removed, when that residual could move its
# value by more than this (relative); see ``kernels.chain``.
RESIDUAL_RTOL = 2.0 ** -44
