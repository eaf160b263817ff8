"""User-facing errors.

Every mistake a user can make (an unknown name, a value out of range, a missing or damaged file)
raises a subclass of :class:`AnalogLearnError` whose message says what is wrong and what would be
valid. The command line prints that message and exits with status 2, without a traceback.
"""

from __future__ import annotations


class AnalogLearnError(Exception):
    """A mistake in the user's input: the message names the problem and the fix."""


class ConfigError(AnalogLearnError, ValueError):
    """An invalid configuration value, key or name."""


class DataError(AnalogLearnError):
    """A dataset that is missing, damaged or does not match its specification."""


class CheckpointError(AnalogLearnError):
    """A checkpoint or run directory that cannot be used as asked."""


class RunBusy(CheckpointError):
    """Another process is training this run directory (it holds the run's lock)."""


class TrainingDiverged(AnalogLearnError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


class StorageError(AnalogLearnError):
    """A write failed (full disk, read-only file system, permissions); files already written are intact."""


class Preempted(BaseException):
    """Training was stopped by a signal (SIGTERM, SIGINT) after a checkpoint; ``train --resume`` continues.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that a sweep stops instead of recording a
    failed run. ``exit_code`` is 128 + the signal number, as a shell reports a signal.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
