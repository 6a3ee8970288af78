"""Every failure a user of model-download can see, in one place.

Each class has a builtin second base so that generic handlers (``except ValueError``,
``except PermissionError``) keep working. Messages say what failed, which model, file or URL,
and what the user can do about it.

    ModelDownloadError
    ├── InvalidReferenceError (ValueError)      bad model name, revision, pattern or path
    ├── UnknownPluginError (LookupError)        no hub or converter by that name
    ├── PluginUnavailableError (RuntimeError)   the plugin exists but cannot run here
    ├── HubError                                the hub refused or failed
    │   ├── ModelNotFoundError (LookupError)
    │   ├── GatedModelError (PermissionError)
    │   ├── UnauthorizedError (PermissionError)
    │   ├── RevisionNotFoundError (LookupError)
    │   ├── RemoteFileNotFoundError (LookupError)
    │   └── HubUnreachableError (ConnectionError)   transient: worth a retry
    │       └── TransferError                       a file transfer gave up after retries
    ├── ConversionError (RuntimeError)          a model could not be converted
    │   ├── UnsupportedModelError (ValueError)  no converter or exporter handles it
    │   ├── RemoteCodeRefusedError (PermissionError)  it needs its own code, not allowed
    │   └── InsufficientMemoryError (MemoryError)
    ├── ValidationFailed (RuntimeError)         converted files do not load, run or agree
    ├── IntegrityError (OSError)                content does not match its expected hash
    ├── StoreError (OSError)
    │   └── ModelNotInStoreError (LookupError)
    ├── DownloadCancelled (RuntimeError)        stopped: a sibling file failed, or Ctrl-C
    ├── LockTimeout (TimeoutError)              another process held a model's lock too long
    └── ServiceUnavailableError (ConnectionError)  a part of the service is not running
"""

from __future__ import annotations


class ModelDownloadError(Exception):
    """Root of every error model-download raises on purpose."""

    #: Whether trying the same operation again may succeed (network trouble, busy hub).
    transient: bool = False


class InvalidReferenceError(ModelDownloadError, ValueError):
    """A model reference, revision, pattern or target path is malformed or unsafe."""


class UnknownPluginError(ModelDownloadError, LookupError):
    """No plugin is registered under the requested name."""


class PluginUnavailableError(ModelDownloadError, RuntimeError):
    """A plugin is registered but cannot run here (missing package, failed start-up)."""


class HubError(ModelDownloadError):
    """The hub refused the request or failed to answer it."""


class ModelNotFoundError(HubError, LookupError):
    """The hub has no such model, or hides it from the credentials given."""


class GatedModelError(HubError, PermissionError):
    """The model is gated: its terms must be accepted on the hub first."""


class UnauthorizedError(HubError, PermissionError):
    """The hub rejected the credentials, or the model needs some."""


class RevisionNotFoundError(HubError, LookupError):
    """The model exists but the branch, tag or commit does not."""


class RemoteFileNotFoundError(HubError, LookupError):
    """The revision exists but a file in it does not."""


class HubUnreachableError(HubError, ConnectionError):
    """The hub could not be reached or kept failing with server errors."""

    transient = True


class TransferError(HubUnreachableError):
    """A file transfer kept failing (cut, stalled or refused) and retries ran out."""


class ConversionError(ModelDownloadError, RuntimeError):
    """A stored model could not be converted."""


class UnsupportedModelError(ConversionError, ValueError):
    """No converter, or not the exporter it relies on, can handle this model."""


class RemoteCodeRefusedError(ConversionError, PermissionError):
    """The model needs its own Python code to load, and the request did not allow that."""


class InsufficientMemoryError(ConversionError, MemoryError):
    """Converting would need more memory than is free."""


class ValidationFailed(ModelDownloadError, RuntimeError):
    """Converted files do not load, compile, run, or agree with the reference."""


class IntegrityError(ModelDownloadError, OSError):
    """Content does not match the size or hash it was published with."""


class StoreError(ModelDownloadError, OSError):
    """The model store cannot complete an operation."""


class ModelNotInStoreError(StoreError, LookupError):
    """The store holds no model matching the request."""


class DownloadCancelled(ModelDownloadError, RuntimeError):
    """A transfer was stopped on purpose: another file of the model failed, or the user quit.

    Its partial file is kept, so the next pull resumes it.
    """


class LockTimeout(ModelDownloadError, TimeoutError):
    """Another process held a model's lock for longer than we were willing to wait.

    Attributes:
        path: the lock file.
        holder: the holder's lock record when we gave up (host, pid), if readable.
    """

    # The message is the only positional argument so that the error survives pickling (Prefect
    # ships exceptions between processes); the rest is restored from __dict__.
    def __init__(
        self, message: str, path: object | None = None, holder: dict | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


class ServiceUnavailableError(ModelDownloadError, ConnectionError):
    """A part of the service (the Prefect server, the runner of a deployment) is not running."""
