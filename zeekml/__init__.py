"""zeekml: small neural detectors on Zeek conn.log and nfdump NetFlow.

The package root imports nothing heavy: the CLI and the library modules import
what they need, and torch is only ever imported by :mod:`zeekml.train`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
