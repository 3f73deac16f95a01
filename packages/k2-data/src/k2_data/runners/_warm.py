"""Imported once in the fork server, so every worker forked from it starts warm.

pyarrow imports pandas (when installed) the first time it converts Python objects
(``pa.array([...])``); that alone takes 0.5-7 s per process depending on whether bytecode
is cached. Doing it here, before the workers fork, makes them share the import.
"""

import numpy  # noqa: F401
import PIL.Image  # noqa: F401
import pyarrow as pa
import pyarrow.parquet

pa.array([0])
