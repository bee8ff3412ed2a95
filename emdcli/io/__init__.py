"""Input and output: sources of rows (NPY, Parquet, standard input), sinks (text, Parquet,
NPY, tables) written atomically, and the space files read beside them."""

from .atomic import OutputError  # noqa: F401
from .sources import load_ground, open_input, read_positions  # noqa: F401
