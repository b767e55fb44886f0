"""The vocabulary every part of EdgeTwin shares, at the bottom of the tree: readings, quality and
value types (``models``), point addresses (``points``), the exception tree (``errors``), the plugin
registry (``registry``), the clock (``clock``) and safe file handling (``files``).

Imports nothing else of the project, and only the standard library, so drivers, twins, rules, the
wire format and the central package can all stand on it.
"""

__version__ = "0.1.0"
