"""Errors a user can cause, as one tree, so the CLI maps each to one clear line.

::

    ZeekmlError                 exit code 1 unless stated
    ├── ParseError              bad input data: carries path and line
    ├── FormatError             input whose format cannot be detected or is unsupported
    ├── SchemaError             a table lacks required canonical columns
    ├── ModelError              model file or model card missing, malformed or mismatched
    ├── StateError              state file malformed, wrong version, or locked by another run
    ├── SinkError               an output could not be written or delivered
    └── ConfigError             an option or configuration value is invalid (exit code 2;
        │                       also a ValueError): raised by the library's option objects
        └── UsageError          bad command-line usage, raised by cli/ (exit code 2)

Low-level exceptions are wrapped with ``raise ... from exc`` keeping path and line.
"""

from __future__ import annotations


class ZeekmlError(Exception):
    """Base of every error zeekml reports to a user without a traceback."""

    exit_code = 1


class ParseError(ZeekmlError):
    """A line (or record) of an input could not be parsed."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


class FormatError(ZeekmlError):
    """The format of an input could not be detected, or is not supported."""


class SchemaError(ZeekmlError):
    """A flow table does not have the canonical columns or dtypes."""


class ModelError(ZeekmlError):
    """A model or its card is missing, malformed, or does not match the runtime."""


class StateError(ZeekmlError):
    """A state file is malformed, of another version, or locked by a running process."""


class SinkError(ZeekmlError):
    """An output could not be written or delivered."""


class ConfigError(ZeekmlError, ValueError):
    """An option or configuration value is invalid: the one error every options object
    (:class:`~zeekml.policy.notice.PolicyConfig`, ``RunOptions``, ``TailOptions``,
    ``ScorerOptions``, ``SparkOptions`` ...) raises when validating, whoever built it."""

    exit_code = 2


class UsageError(ConfigError):
    """Bad command-line usage that argparse itself cannot catch (raised by ``cli/``)."""

    exit_code = 2
