"""Cancel scopes on trio: ``trio.CancelScope``, ``move_on_*``, ``fail_*``, nurseries; anyio on trio.

Every scope on trio is a ``trio.CancelScope`` (anyio's trio backend wraps one; a nursery, and so
an anyio task group, enters one in ``NurseryManager.__aenter__``), so one set of hooks on that
class serves native trio and anyio's trio backend. The creation site (frames of ``__init__``'s
caller) tells ``trio.move_on_after`` from ``anyio.fail_at`` or a nursery; exits are seen in
``_close``, which both ``__exit__`` and the nursery's ``__aexit__`` call. trio's own internal
scopes are not tracked. A ``trio.abc.Instrument``, added to a run when its first task enters a
scope, reports task ends and, at the end of the run, scopes still entered (``scope_leaked``).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import weakref
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames, task_adapters
from scopewatch._current import safe_current_task
from scopewatch.instrumentation import _closed_scopes
from scopewatch.instrumentation import _scope_state as state
from scopewatch.instrumentation import _trio_cancels as cancels
from scopewatch.instrumentation._patching import (
    Patches,
    factory_kinds,
    hide_own_frame,
    when_imported,
)
from scopewatch.instrumentation._suppression import instrumentation_enabled

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import CodeType, FrameType, ModuleType

_PENDING_LIMIT = 4096
_WALK_LIMIT = 10
_CONTEXTLIB_FILE = contextlib.__file__
_code_info = frames._code_info

_active = False
_patches = Patches()
_trio: Any = None
_current_task: Callable[[], Any] = cancels.no_task
"""The running trio task or ``None`` (trio's, made safe, while trio is patched)."""
_pending: dict[int, tuple[object, str, bool]] = {}
"""Scopes created but not yet entered: id -> (scope, kind, user)."""
_creators: dict[int, tuple[CodeType, str | None]] = {}
"""``id(code)`` of functions that create scopes on the user's behalf -> ``(code, kind)``;
``kind`` ``None`` marks a pass-through (anyio's wrapper), the next frame decides."""
_DISCARDED = ""
"""The kind of a creator whose scope is thrown away at once (it is not tracked)."""
_anyio_enter: CodeType | None = None
_watched_runs: weakref.WeakSet[Any] = weakref.WeakSet()
"""Root tasks of the runs that have the scope instrument."""


def install(runtime: Any) -> None:
    """Patch ``trio.CancelScope`` now or when trio is imported."""
    global _active
    del runtime  # the tracker is the feature's (``_scope_state.start``)
    _active = True
    when_imported("trio", _on_import)
    when_imported("anyio._backends._trio", _on_anyio_import)


def uninstall() -> None:
    """Restore every original and make the import hooks inert."""
    global _active, _trio, _current_task
    _active = False
    _patches.restore()
    _trio = None
    _current_task = cancels.current_task = cancels.no_task
    _pending.clear()


def _on_import(module: ModuleType) -> None:
    if _active and not _patches:
        try:
            _patch(module)
        except Exception as error:  # an import hook must not fail the application's import
            _patches.restore()
            state.PART.fail(error)


def _on_anyio_import(module: ModuleType) -> None:
    """Learn anyio's trio backend (``install`` calls this again after every ``_patch``)."""
    if _active and _patches:
        try:
            _learn_anyio(module)
        except Exception as error:
            state.PART.fail(error)


def _learn_anyio(module: ModuleType) -> None:
    global _anyio_enter
    import anyio

    from scopewatch.instrumentation.anyio_scopes import api_kinds

    frames.add_internal_package(anyio.__file__)
    _creators.update(api_kinds())
    scope_class = module.CancelScope
    from anyio._core._tasks import CancelScope as PublicCancelScope

    if issubclass(scope_class, PublicCancelScope):
        # ``anyio.CancelScope(...)``: ``__new__`` builds a backend scope, then Python calls
        # its ``__init__`` again, which replaces the trio scope built in ``__new__``.
        new_code = PublicCancelScope.__new__.__code__
        _creators[id(new_code)] = (new_code, _DISCARDED)
    create = module.TrioBackend.__dict__["create_cancel_scope"]
    for code in (scope_class.__init__.__code__, getattr(create, "__func__", create).__code__):
        _creators[id(code)] = (code, None)
    group_enter = module.TaskGroup.__aenter__.__code__
    _creators[id(group_enter)] = (group_enter, semconv.SPAN_ANYIO_TASK_GROUP)
    _anyio_enter = scope_class.__enter__.__code__
    cancels.anyio_cancel = scope_class.cancel.__code__


def _patch(trio: ModuleType) -> None:
    global _trio, _current_task
    from trio._core import _run

    _trio = trio
    _current_task = cancels.current_task = safe_current_task(trio.lowlevel.current_task)
    ki = sys.modules.get("trio._core._ki")
    cancels.ki_file = getattr(ki, "__file__", None) or ""
    frames.add_internal_package(trio.__file__)
    runner = getattr(_run, "unrolled_run", None)
    if runner is not None:
        frames.add_boundary(runner.__code__)
    task_adapters.register(trio.lowlevel.Task, _TrioTasks())
    _closed_scopes.watch()
    _creators.clear()
    _creators.update(
        factory_kinds(
            trio._timeouts,
            (
                ("move_on_after", semconv.SPAN_TRIO_MOVE_ON_AFTER),
                ("move_on_at", semconv.SPAN_TRIO_MOVE_ON_AT),
                ("fail_after", semconv.SPAN_TRIO_FAIL_AFTER),
                ("fail_at", semconv.SPAN_TRIO_FAIL_AT),
            ),
        )
    )
    # trio before 0.28 wraps KI-protected functions: the code that runs is the ``__wrapped__`` one
    nursery_enter = inspect.unwrap(_run.NurseryManager.__aenter__).__code__
    _creators[id(nursery_enter)] = (nursery_enter, semconv.SPAN_TRIO_NURSERY)
    scope_class = trio.CancelScope
    protect = trio.lowlevel.enable_ki_protection
    _patches.patch(scope_class, "__init__", _init)
    _patches.patch(scope_class, "__enter__", lambda original: protect(_enter(original)))
    _patches.patch(scope_class, "_close", _close)
    if "_cancel" in scope_class.__dict__:
        _patches.patch(scope_class, "_cancel", lambda original: protect(cancels.wrap(original)))
    else:  # trio without cancel reasons: every cancellation goes through cancel()
        _patches.patch(
            scope_class, "cancel", lambda original: protect(cancels.wrap_legacy(original))
        )


# --- creation and enter --------------------------------------------------------------------------


def _init(original: Callable[..., None]) -> Callable[..., None]:
    part = state.PART

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if part.enabled:
            try:
                _remember_kind(self, sys._getframe(1))
            except Exception as error:
                part.fail(error)

    return __init__


def _remember_kind(scope: object, frame: FrameType | None) -> None:
    """Find who created ``scope``: a factory's kind and whether user code called it."""
    kind = None
    via_anyio = False
    for _ in range(_WALK_LIMIT):
        if frame is None:
            break
        code = frame.f_code
        creator = _creators.get(id(code))
        if creator is not None and creator[0] is code:
            if creator[1] is None:
                via_anyio = True
            elif creator[1] == _DISCARDED:
                return
            else:
                kind = creator[1]
        elif code.co_filename != _CONTEXTLIB_FILE:
            break
        frame = frame.f_back
    internal = frame is None or _internal(frame.f_code)
    if kind is None and via_anyio:
        kind = semconv.SPAN_ANYIO_CANCEL_SCOPE
    if kind is None:
        if internal:
            return  # trio's (or a library's) own scope: not tracked
        kind = semconv.SPAN_TRIO_CANCEL_SCOPE
    if len(_pending) >= _PENDING_LIMIT:
        del _pending[next(iter(_pending))]
    _pending[id(scope)] = (scope, kind, not internal)


def _internal(code: CodeType) -> bool:
    """``frames.is_internal`` with its cache read inline (the hot path asks per scope)."""
    info = _code_info.get(id(code))
    return bool(info[1]) if info is not None and info[0] is code else frames.is_internal(code)


def _enter(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    part = state.PART
    getframe = sys._getframe
    closed = _closed_scopes.codes
    enabled = instrumentation_enabled

    def __enter__(self: Any) -> Any:
        result = original(self)
        if part.enabled:
            try:
                frame: FrameType | None = getframe(1)
                if frame is not None and frame.f_code.co_filename == cancels.ki_file:
                    frame = cancels.caller(frame)
                if frame is not None:
                    code = frame.f_code
                    if closed.get(id(code)) is not code:  # a self-contained trio scope
                        if enabled():
                            _on_enter(self, frame)
                        elif _pending:  # suppressed: untracked, its exit passes straight through
                            _pending.pop(id(self), None)
            except Exception as error:
                part.fail(error)
        return result

    return __enter__


def _on_enter(scope: Any, frame: FrameType) -> None:
    tracker = state.tracker
    if tracker is None:
        return
    pending = _pending.pop(id(scope), None)
    if pending is not None and pending[0] is scope:
        _, kind, user = pending
    elif frame.f_code is _anyio_enter:  # an anyio scope created before instrumenting
        caller = frame.f_back
        kind = semconv.SPAN_ANYIO_CANCEL_SCOPE
        user = caller is not None and not _internal(caller.f_code)
    elif _internal(frame.f_code):
        return
    else:  # created before instrumenting
        kind, user = semconv.SPAN_TRIO_CANCEL_SCOPE, True
    task = _current_task()
    if task is None:
        return
    deadline = getattr(scope, "_deadline", None)
    if deadline is None:
        deadline = scope.deadline
    timeout = None if deadline == math.inf else max(0.0, deadline - _trio.current_time())
    shield = getattr(scope, "_shield", None)
    if shield is None:
        shield = scope.shield
    tracker.enter(scope, kind, user, task, frame, timeout, shield, task.name)


# --- exit ----------------------------------------------------------------------------------------


def _close(original: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    part = state.PART

    def _close(self: Any, exc: Any) -> Any:
        tracker = state.tracker
        if tracker is None or id(self) not in tracker.by_scope or not part.enabled:
            return original(self, exc)
        record = task = parents = None
        try:
            task = _current_task()
            record = tracker.exit_begin(self, task, sys._getframe(1))
            if record is not None and exc is not None:
                parents = _parent_status(self)
        except Exception as error:
            part.fail(error)
        if record is None:
            return original(self, exc)
        name = task.name if task is not None else ""
        facts = _facts_reader(parents) if parents is not None else _plain_facts
        try:
            remaining = original(self, exc)
        except BaseException as raised:
            state.finish_exit(self, record, task, raised, facts, name)
            hide_own_frame(raised)
            raise
        if exc is None and remaining is None:
            try:
                tracker.exit_ok(record, task, self, facts, name)
            except Exception as error:
                part.fail(error)
            return remaining
        # ``remaining`` is what leaves the scope: None, ``exc``, or trio's own RuntimeError
        # ("Cancel scope stack corrupted"), which gets the violation's note.
        state.finish_exit(self, record, task, remaining, facts, name)
        return remaining

    return _close


def _parent_status(scope: Any) -> Any:
    """The enclosing cancel status, read before ``_close`` unlinks the scope's own."""
    status = getattr(scope, "_cancel_status", None)
    return getattr(status, "parent", None)


def _parents(status: Any) -> Iterator[object]:
    for _ in range(256):
        if status is None:
            return
        scope = getattr(status, "_scope", None)
        if scope is not None:
            yield scope
        status = status.parent


def _plain_facts(scope: Any) -> tuple[bool, bool, tuple[()]]:
    """The facts of a scope exited without an exception (no enclosing scope to name)."""
    return scope.cancel_called, scope.cancelled_caught, ()


def _facts_reader(parent_status: Any) -> state.ScopeFacts:
    def read_facts(scope: Any) -> tuple[bool, bool, Iterator[object]]:
        return scope.cancel_called, scope.cancelled_caught, _parents(parent_status)

    return read_facts


# --- runs ----------------------------------------------------------------------------------------


class _TrioTasks(task_adapters.TrioTasks):
    """trio tasks; the first scope of a run adds the instrument that reports task ends."""

    def watch(self, task: Any, on_done: Callable[[Any], object]) -> None:
        del task, on_done
        trio = _trio
        if trio is None:
            return
        root = trio.lowlevel.current_root_task()
        if root is None or root in _watched_runs:
            return
        _watched_runs.add(root)
        trio.lowlevel.add_instrument(_ScopeInstrument(root))


class _ScopeInstrument:
    """A ``trio.abc.Instrument`` (duck-typed: trio only looks up the hook methods)."""

    def __init__(self, root: Any) -> None:
        self._root = root

    def task_exited(self, task: Any) -> None:
        """Forget the task's stack; scopes it left entered wait for the run's end."""
        tracker = state.tracker
        if tracker is not None and state.PART.enabled:
            try:
                tracker.task_done(task)
            except Exception as error:
                state.PART.fail(error)

    def after_run(self) -> None:
        """The run ended: every scope its tasks still have entered leaked."""
        tracker = state.tracker
        if tracker is not None and state.PART.enabled:
            try:
                tracker.close_loop(self._root)
            except Exception as error:
                state.PART.fail(error)
