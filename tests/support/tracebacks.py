"""Which files a user's traceback shows, for the "no scopewatch frame in it" tests."""

from __future__ import annotations

import os
import traceback

OWN_WRAPPERS = "scopewatch" + os.sep + "instrumentation"


def files_of(error: BaseException) -> list[str]:
    """Files of every traceback entry of ``error`` and of the exceptions inside it."""
    files = [entry.filename for entry in traceback.extract_tb(error.__traceback__)]
    for inner in getattr(error, "exceptions", ()):
        files += files_of(inner)
    return files


def own_wrapper_files(error: BaseException) -> list[str]:
    """The entries of scopewatch's patch layer in ``error``'s traceback (none expected)."""
    return [name for name in files_of(error) if OWN_WRAPPERS in name]
