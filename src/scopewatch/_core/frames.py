"""Cheap stack capture: ``(code, line)`` pairs at capture time, formatted only when reported."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import os
from types import CodeType, FrameType
from typing import Any

Frames = tuple[tuple[CodeType, int], ...]
Captured = tuple[Frames, str, int]
"""What :func:`capture` returns: frames, async generator name, async generator frame id."""

_ASYNC_GENERATOR = inspect.CO_ASYNC_GENERATOR
_WALK_LIMIT = 64
"""Frames examined at most per capture (internal frames count, so a deep library stack ends)."""


def _package_dir(module_file: str | None) -> str:
    return os.path.dirname(os.path.abspath(module_file or "")) + os.sep


_INTERNAL_PREFIXES: list[str] = [
    _package_dir(asyncio.__file__),
    _package_dir(os.path.dirname(os.path.abspath(__file__))),  # the scopewatch package
]
_INTERNAL_PREFIXES += [  # OpenTelemetry (a namespace package), e.g. its asyncio instrumentation
    os.path.join(os.path.abspath(location), "")
    for location in getattr(
        importlib.util.find_spec("opentelemetry"), "submodule_search_locations", None
    )
    or ()
]
_USER_PREFIXES: tuple[str, ...] = (
    _package_dir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "x")),
)
"""Inside scopewatch but user code: the bundled example programs."""
_CONTEXTLIB_FILE = os.path.abspath(contextlib.__file__)
_LOOP_CALLBACK = asyncio.events.Handle._run.__code__
"""Where the event loop runs a task step: frames below it called ``asyncio.run``, not the task."""
_INTERNAL_FILES: set[str] = {_CONTEXTLIB_FILE}
_BOUNDARY = 2
"""``internal`` value of a runner's task-stepping code (e.g. trio's ``unrolled_run``)."""
_boundaries: dict[int, CodeType] = {id(_LOOP_CALLBACK): _LOOP_CALLBACK}
"""``id(code)`` of runner code that steps tasks: frames beyond it called the runner."""
_CodeInfo = tuple[CodeType, int, dict[int, int], bool]
_code_info: dict[int, _CodeInfo] = {}
"""``id(code)`` -> ``(code, internal, {f_lasti: line}, async generator)``. Keyed by ``id()``
because hashing a code object hashes its constants and bytecode on every lookup (~150 ns for a
large function); the entry holds the code object, so its id cannot be reused while cached. The
line cache spares ``frame.f_lineno``, which decodes the line table on every access."""


_CM_AENTER = contextlib._AsyncGeneratorContextManager.__aenter__.__code__
_CM_AEXIT = contextlib._AsyncGeneratorContextManager.__aexit__.__code__
"""Where contextlib runs an ``@asynccontextmanager``'s generator (compared by identity: hashing
a code object is slow)."""
_MANAGED_LIMIT = 1024
_managed: dict[int, str] = {}
"""``id()`` -> ``__qualname__`` of async generator frames seen driven by ``contextlib``
(``@asynccontextmanager``) when a scope was entered or exited in them (bounded; the name tells
a reused id apart)."""


def add_internal_package(module_file: str | None) -> None:
    """Treat every file of the package containing ``module_file`` as library code."""
    prefix = _package_dir(module_file)
    if prefix not in _INTERNAL_PREFIXES:
        _INTERNAL_PREFIXES.append(prefix)
        _code_info.clear()


def add_boundary(code: CodeType) -> None:
    """Stop captures at ``code``, a runner stepping tasks (like asyncio's ``Handle._run``)."""
    _boundaries[id(code)] = code
    _code_info.pop(id(code), None)


def is_internal(code: CodeType) -> bool:
    """Whether ``code`` belongs to anyio, asyncio, contextlib or scopewatch (cached)."""
    info = _code_info.get(id(code))
    if info is None or info[0] is not code:
        info = _classify(code)
    return bool(info[1])


def _classify(code: CodeType) -> _CodeInfo:
    filename = code.co_filename
    internal = (
        filename in _INTERNAL_FILES
        or filename.startswith(tuple(_INTERNAL_PREFIXES))
        or filename.startswith("<frozen ")
    ) and not filename.startswith(_USER_PREFIXES)
    info: _CodeInfo = (
        code,
        _BOUNDARY if id(code) in _boundaries else int(internal),
        {},
        bool(code.co_flags & _ASYNC_GENERATOR),
    )
    _code_info[id(code)] = info
    return info


def capture(frame: FrameType | None, depth: int) -> Captured:
    """Keep up to ``depth`` user frames from ``frame`` outwards.

    One loop kept inline on purpose (it runs on every scope enter). The first generator frame
    found is checked for contextlib driving it (``managed_generator``): a single code identity
    test, about 600 instructions more per capture in a generator, none elsewhere.

    Returns:
        The frames (innermost first), the ``__qualname__`` of the innermost user async
        generator among them (``""`` if none) and ``id()`` of that generator's frame.
    """
    kept: list[tuple[CodeType, int]] = []
    keep = kept.append
    left = depth
    asyncgen = ""
    asyncgen_frame = 0
    if depth <= 0:
        return (), asyncgen, asyncgen_frame
    infos = _code_info
    for _ in range(_WALK_LIMIT):
        if frame is None:
            break
        code = frame.f_code
        info = infos.get(id(code))
        if info is None or info[0] is not code:
            info = _classify(code)
        if not info[1]:
            lines = info[2]
            lasti = frame.f_lasti
            line = lines.get(lasti)
            if line is None:
                line = lines[lasti] = frame.f_lineno
            keep((code, line))
            left -= 1
            if info[3] and not asyncgen_frame:
                asyncgen = qualname(code)
                asyncgen_frame = id(frame)
                caller = frame.f_back  # read once: it is also the next frame of the walk
                driver = caller.f_code if caller is not None else None
                if driver is _CM_AENTER or driver is _CM_AEXIT:
                    _managed[asyncgen_frame] = asyncgen
                    if len(_managed) > _MANAGED_LIMIT:
                        _managed.pop(next(iter(_managed), 0), None)
                if not left:
                    break
                frame = caller
                continue
            if not left:
                break
        elif info[1] == _BOUNDARY:  # asyncio's Handle._run, trio's unrolled_run
            break
        frame = frame.f_back
    return tuple(kept), asyncgen, asyncgen_frame


def plain_head(frame: FrameType) -> tuple[CodeType, int] | None:
    """``(code, line)`` of ``frame`` if :func:`capture` keeps it and it is no async generator.

    Such a frame can head the outer frames captured from its caller before (``None``: capture).
    """
    code = frame.f_code
    info = _code_info.get(id(code))
    if info is None or info[0] is not code:
        info = _classify(code)
    if info[1] or info[3]:
        return None
    lines = info[2]
    lasti = frame.f_lasti
    line = lines.get(lasti)
    if line is None:
        line = lines[lasti] = frame.f_lineno
    return code, line


def managed_generator(frame_id: int, name: str) -> bool:
    """Whether the async generator ``name`` running ``frame_id`` was entered as a context manager.

    Known for generators a scope was entered in (``ScopeRecord.asyncgen_frame``/``asyncgen``):
    ``contextlib`` drove it (``@asynccontextmanager``), not ``async for`` / ``__anext__``.
    """
    return bool(frame_id) and _managed.get(frame_id) == name


def driven_by_contextlib(frame: FrameType | None) -> bool:
    """Whether the innermost async generator on the stack from ``frame`` is run by contextlib.

    That is an ``@asynccontextmanager``'s ``__aenter__``/``__aexit__``, not ``__anext__``,
    ``asend`` or ``aclose`` called by the program.
    """
    for _ in range(_WALK_LIMIT):
        if frame is None:
            return False
        if frame.f_code.co_flags & _ASYNC_GENERATOR:
            caller = frame.f_back
            return caller is not None and caller.f_code.co_filename == _CONTEXTLIB_FILE
        frame = frame.f_back
    return False


def frame_ids(frame: FrameType | None) -> set[int]:
    """``id()`` of the frames from ``frame`` outwards (bounded), to find a generator frame.

    An async generator driven by ``contextlib`` (an ``@asynccontextmanager``) is left out: its
    exit in another task is a context manager closed elsewhere, not a generator step.
    """
    ids: set[int] = set()
    for _ in range(_WALK_LIMIT):
        if frame is None:
            break
        caller = frame.f_back
        if not (
            frame.f_code.co_flags & _ASYNC_GENERATOR
            and caller is not None
            and caller.f_code.co_filename == _CONTEXTLIB_FILE
        ):
            ids.add(id(frame))
        frame = caller
    return ids


def qualname(code: CodeType) -> str:
    """``co_qualname`` where Python has it (3.11+), else ``co_name``."""
    return getattr(code, "co_qualname", code.co_name)


def location(frames: Frames) -> str:
    """``file:line`` of the innermost frame, or ``""``."""
    if not frames:
        return ""
    code, line = frames[0]
    return f"{code.co_filename}:{line}"


def format_frames(frames: Frames) -> str:
    """Traceback-style text, outermost call first like Python's own tracebacks."""
    return "".join(
        f'  File "{code.co_filename}", line {line}, in {qualname(code)}\n'
        for code, line in reversed(frames)
    )


def local_of(frame: FrameType, name: str) -> Any:
    """One local variable of a function ``frame`` (``None`` if unbound), leaving nothing behind.

    Before Python 3.13, reading ``frame.f_locals`` builds a dict of the frame's locals and caches
    it on the frame, where it keeps every local alive after the code has deleted it, for as long
    as the frame lives (a traceback holds it): reference cycles the application does not have
    (anyio's own suite checks for them). That dict is only a cache, refreshed before every
    other read, so it is emptied again. Module and class frames are read, never emptied: their
    ``f_locals`` is the real namespace.
    """
    namespace = frame.f_locals
    try:
        return namespace.get(name)
    finally:
        if type(namespace) is dict and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
            namespace.clear()


# --- the application's own frames (DESIGN section 2, ``scopewatch.enter.app``) ------------------

_LIBRARY_PARTS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")
_stdlib_prefixes: tuple[str, ...] | None = None
"""The standard library's directories, found on first use (``sysconfig`` is slow to ask)."""
_SCOPEWATCH_PREFIX = _package_dir(os.path.dirname(os.path.abspath(__file__)))
_app_files: dict[str, bool] = {}


def is_app_file(filename: str) -> bool:
    """Whether ``filename`` is the application's own code (cached).

    Not an installed distribution (``site-packages``/``dist-packages``), not the standard
    library, not scopewatch (its bundled examples excepted).
    """
    global _stdlib_prefixes
    known = _app_files.get(filename)
    if known is None:
        if _stdlib_prefixes is None:
            import sysconfig

            paths = sysconfig.get_paths()
            _stdlib_prefixes = tuple(
                sorted(
                    {
                        os.path.join(os.path.abspath(paths[key]), "")
                        for key in ("stdlib", "platstdlib")
                        if paths.get(key)
                    }
                )
            )
        if filename.startswith(_USER_PREFIXES):
            known = True
        else:
            known = not (
                filename.startswith("<frozen ")
                or any(part in filename for part in _LIBRARY_PARTS)
                or filename.startswith(_stdlib_prefixes)
                or filename.startswith(_SCOPEWATCH_PREFIX)
            )
        if len(_app_files) < 4096:
            _app_files[filename] = known
    return known


def app_frame(kept: Frames) -> tuple[CodeType, int] | None:
    """The first application frame of ``kept`` when its innermost frame is a library's.

    ``None`` when the innermost frame is already the application's, or none of ``kept`` is.
    """
    if not kept or is_app_file(kept[0][0].co_filename):
        return None
    for code, line in kept[1:]:
        if is_app_file(code.co_filename):
            return code, line
    return None


def describe(code: CodeType, line: int) -> str:
    """``path:line in function``."""
    return f"{code.co_filename}:{line} in {qualname(code)}"


def app_location(kept: Frames) -> str:
    """``path:line in function`` of :func:`app_frame`, or ``""``."""
    found = app_frame(kept)
    return describe(*found) if found is not None else ""


def explained_location(kept: Frames) -> str:
    """Where, for people: the application frame first, then the library frame holding it.

    ``app.py:12 in connect (library: .../mcp/client/stdio.py:201 in stdio_client)``; just
    ``file:line`` when the innermost frame is the application's; ``""`` when nothing is known.
    """
    found = app_frame(kept)
    if found is None:
        return location(kept)
    code, line = kept[0]
    return f"{describe(*found)} (library: {describe(code, line)})"
