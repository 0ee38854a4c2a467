"""Every exception Tether raises, under one base class.

The names listed in ``__all__`` are public (API.md). Exceptions travel across the wire as
data (``type``, ``message``, and ``trace`` only in ``--dev``); each public class has a wire
name ``anvil.server.<ClassName>`` so that Anvil's uplink client maps them to its own classes.
"""

from __future__ import annotations

import builtins

__all__ = [
    "AppOfflineError",
    "BackgroundTaskError",
    "BackgroundTaskKilled",
    "BackgroundTaskNotFound",
    "DeadReferenceError",
    "ExecutionTerminatedError",
    "InsecureJelly",
    "InternalError",
    "InvalidResponseError",
    "NoServerFunctionError",
    "PermissionDenied",
    "QuotaExceededError",
    "RemoteError",
    "RuntimeUnavailableError",
    "SerializationError",
    "ServiceNotAdded",
    "SessionExpiredError",
    "TetherError",
    "TimeoutError",
    "UplinkDisconnectedError",
]


class TetherError(Exception):
    """Base class of every exception Tether raises."""


class SerializationError(TetherError):
    """A value cannot be sent or received; the message names the path to it."""


class InsecureJelly(SerializationError):
    """The wire named a class that is not on the receiver's allow-list."""


class PermissionDenied(TetherError):
    """The caller may not do this: a bad capability, a failed ``require_user``, no trust."""


class SessionExpiredError(TetherError):
    """The session ended; call ``server.reset_session()`` to start a new one."""


class TimeoutError(TetherError, builtins.TimeoutError):
    """A call took longer than its deadline."""


class RemoteError(TetherError):
    """Any other exception raised on the far side.

    Attributes:
        type_name: the qualified name of the original exception class.
        trace: ``[file, line]`` pairs, innermost first, only from a ``--dev`` server.
    """

    def __init__(
        self, message: str, type_name: str = "Exception", trace: list[object] | None = None
    ) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.trace = trace

    def __str__(self) -> str:
        return f"{self.type_name}: {self.args[0]}" if self.args else self.type_name


class AppOfflineError(TetherError):
    """No server can be reached: not connected, or the connection was lost."""


class NoServerFunctionError(TetherError):
    """No server function is registered under that name."""


class UplinkDisconnectedError(TetherError):
    """The client that registered the called function went away during the call."""


class InternalError(TetherError):
    """Tether itself failed; the details are in the server's log."""


class InvalidResponseError(TetherError):
    """A response could not be understood."""


class QuotaExceededError(TetherError):
    """A configured quota was exceeded."""


class RuntimeUnavailableError(TetherError):
    """The server runtime is not available."""


class ServiceNotAdded(TetherError):
    """The app uses a service it has not enabled."""


class ExecutionTerminatedError(TetherError):
    """The server process running the call was terminated."""


class BackgroundTaskError(TetherError):
    """A background task could not be launched or managed."""


class BackgroundTaskKilled(BackgroundTaskError):
    """The background task was killed."""


class BackgroundTaskNotFound(BackgroundTaskError):
    """No background task has that id."""


class DeadReferenceError(TetherError):
    """A message to a mirror that is gone: its connection closed, or the far side
    released it (``observer.call_remote`` fails with it through its future)."""


class ProtocolError(TetherError):
    """Internal: a broken protocol rule. Never crosses the public API."""


class LocalProtocolError(ProtocolError):
    """This side broke the protocol: a bug here."""


class RemoteProtocolError(ProtocolError):
    """The peer broke it: close that connection only."""


class FrameTooLarge(RemoteProtocolError):
    """The peer sent a frame over the size limit: close with 1009 (message too big)."""


WIRE_PREFIX = "anvil.server."

PUBLIC_ERRORS: dict[str, type[TetherError]] = {
    cls.__name__: cls
    for cls in (
        AppOfflineError,
        BackgroundTaskError,
        BackgroundTaskKilled,
        BackgroundTaskNotFound,
        DeadReferenceError,
        ExecutionTerminatedError,
        InsecureJelly,
        InternalError,
        InvalidResponseError,
        NoServerFunctionError,
        PermissionDenied,
        QuotaExceededError,
        RuntimeUnavailableError,
        SerializationError,
        ServiceNotAdded,
        SessionExpiredError,
        TimeoutError,
        UplinkDisconnectedError,
        TetherError,
    )
}


def wire_name_of_error(cls: type[BaseException]) -> str | None:
    """The wire name of one of Tether's own public exceptions, else None."""
    if PUBLIC_ERRORS.get(cls.__name__) is cls:
        return WIRE_PREFIX + cls.__name__
    return None


def error_class_for_wire_name(name: str) -> type[TetherError] | None:
    """Tether's exception class for ``anvil.server.X`` or ``tether.X``, else None."""
    for prefix in (WIRE_PREFIX, "tether."):
        if name.startswith(prefix):
            return PUBLIC_ERRORS.get(name[len(prefix) :])
    return None
