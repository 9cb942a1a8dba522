"""The errors FABRIC reports to its callers.

Every problem with what a user or an API client sent is a :class:`FabricInputError` naming the
exact place (``liked[2].weight``, ``strength``, ``alwayson_scripts.FABRIC.args[0].end``), so the
HTTP layer can answer 422 and the UI can show the message as it is.  A problem of the disk that
holds the feedback store is a :class:`FabricStoreError`: the request was fine, the server could
not keep it.
"""

from __future__ import annotations

__all__ = ["FabricError", "FabricInputError", "FabricNotFoundError", "FabricStoreError"]


class FabricError(Exception):
    """Base class of the errors FABRIC raises on purpose."""


class FabricInputError(FabricError, ValueError):
    """Bad input. ``field`` names where it is, ``message`` says what is wrong with it."""

    def __init__(self, field: str, message: str):
        self.field = str(field)
        self.message = str(message)
        super().__init__(f"{self.field}: {self.message}")

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def __reduce__(self):  # keep pickling (multiprocessing, hypothesis) working
        return (type(self), (self.field, self.message))

    def with_prefix(self, prefix: str) -> "FabricInputError":
        """The same error, its field placed under ``prefix`` (``a.b`` + ``c[1]`` = ``a.b.c[1]``)."""
        if not prefix:
            return self
        sep = "" if self.field.startswith("[") else "."
        return type(self)(f"{prefix}{sep}{self.field}", self.message)


class FabricNotFoundError(FabricInputError):
    """A well-formed reference to something that does not exist (an image id, a preset name)."""


class FabricStoreError(FabricError, OSError):
    """The feedback store could not be written or read (read-only or full disk, permissions).

    The store's state is unchanged when this is raised.
    """
