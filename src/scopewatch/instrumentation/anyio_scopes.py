"""anyio cancel scopes on the asyncio backend: ``CancelScope``, ``move_on_*``, ``fail_*``, groups.

``anyio.CancelScope`` is only a factory; the real class is ``anyio._backends._asyncio.CancelScope``,
imported lazily by anyio, so it is patched when that module is imported. Every scope is tracked
but anyio's self-contained ones and the per-task scope (``TaskHandle._run_coro``, anyio 4.14+),
which is tracked only for the tasks that enter a tracked scope or cancel it; the creation site
(``create_cancel_scope`` caller) tells ``move_on_after`` from ``fail_at`` and user scopes from
anyio's own.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import sys
import time
import types
import weakref
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames
from scopewatch.instrumentation import _anyio_cancels as cancels
from scopewatch.instrumentation import _closed_scopes
from scopewatch.instrumentation import _scope_state as state
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

BACKEND = "anyio._backends._asyncio"
_PENDING_LIMIT = 4096
_CONTEXTLIB_FILE = contextlib.__file__
_code_info = frames._code_info

_active = False
_patches = Patches()
_pending: dict[int, tuple[Callable[[], object], str]] = {}
"""Scopes ``move_on_after``/``move_on_at`` made, not yet entered: id -> (weak reference to the
scope, kind). Weak: a scope created and never entered must not be kept (anyio scopes that
cannot be weakly referenced, 4.14 and 4.15, are held strongly, boundedly)."""
_pending_kinds: dict[int, tuple[CodeType, str]] = {}
"""``id(code)`` of the factories that return a scope to their caller -> ``(code, kind)``
(ids: hashing a code object is slow)."""
_enter_kinds: dict[int, tuple[CodeType, str]] = {}
"""``id(code)`` of anyio functions that enter a scope for their caller -> ``(code, kind)``:
``fail_after``/``fail_at`` (context managers) and a task group's ``__aenter__``."""
_task_body: CodeType | None = None
"""``TaskHandle._run_coro`` (anyio 4.14+): its scope is tracked late (``cancels.task_scope``)."""


def install(runtime: Any) -> None:
    """Patch the anyio asyncio backend now or when it is imported."""
    global _active
    del runtime  # the tracker is the feature's (``_scope_state.start``)
    _active = True
    when_imported(BACKEND, _on_import)


def uninstall() -> None:
    """Restore every original and make the import hook inert."""
    global _active
    _active = False
    _patches.restore()
    _pending.clear()


def _on_import(module: ModuleType) -> None:
    if _active and not _patches:
        _patch(module)


def _patch(module: ModuleType) -> None:
    global _task_body
    import anyio
    from anyio._core import _tasks

    frames.add_internal_package(anyio.__file__)
    scope_class = module.CancelScope
    backend_class = module.AsyncIOBackend
    kinds = api_kinds()
    factories = {semconv.SPAN_ANYIO_MOVE_ON_AFTER, semconv.SPAN_ANYIO_MOVE_ON_AT}
    _pending_kinds.clear()
    _pending_kinds.update({key: entry for key, entry in kinds.items() if entry[1] in factories})
    _enter_kinds.clear()
    _enter_kinds.update(
        {
            key: entry
            for key, entry in kinds.items()
            if entry[1] in (semconv.SPAN_ANYIO_FAIL_AFTER, semconv.SPAN_ANYIO_FAIL_AT)
        }
    )
    aenter = module.TaskGroup.__aenter__.__code__
    _enter_kinds[id(aenter)] = (aenter, semconv.SPAN_ANYIO_TASK_GROUP)
    cancels.task_group_aexit = module.TaskGroup.__aexit__.__code__
    spawn = getattr(module.TaskGroup, "_spawn", None)
    cancels.task_done = _nested_code(spawn.__code__, "task_done") if spawn is not None else None
    cancels.deadline_callback = scope_class._timeout.__code__
    run_coro = getattr(getattr(_tasks, "TaskHandle", None), "_run_coro", None)
    _task_body = cancels.task_body = getattr(run_coro, "__code__", None)
    cancels.backend = module
    if state.tracker is not None:
        state.tracker.task_scope = _task_scope
    _closed_scopes.watch()
    _wrap(scope_class, backend_class)


def _nested_code(code: CodeType, name: str) -> CodeType | None:
    """The code object of the function ``name`` defined inside ``code``, if any."""
    for const in code.co_consts:
        if isinstance(const, types.CodeType) and const.co_name == name:
            return const
    return None


def api_kinds() -> dict[int, tuple[CodeType, str]]:
    """``id(code)`` -> ``(code, kind)`` of anyio's public scope factories (any backend)."""
    from anyio._core import _tasks

    kinds = factory_kinds(
        _tasks,
        (
            ("move_on_after", semconv.SPAN_ANYIO_MOVE_ON_AFTER),
            ("move_on_at", semconv.SPAN_ANYIO_MOVE_ON_AT),
            ("fail_after", semconv.SPAN_ANYIO_FAIL_AFTER),
            ("fail_at", semconv.SPAN_ANYIO_FAIL_AT),
        ),
    )
    new_code = _tasks.CancelScope.__new__.__code__
    kinds[id(new_code)] = (new_code, semconv.SPAN_ANYIO_CANCEL_SCOPE)
    return kinds


def _wrap(scope_class: type, backend_class: type) -> None:
    _patches.patch(scope_class, "__enter__", _enter_wrapper)
    _patches.patch(scope_class, "__exit__", _exit_wrapper)
    _patches.patch(scope_class, "cancel", cancels.wrap)
    _patches.patch(backend_class, "create_cancel_scope", _create_wrapper)  # stays a classmethod


def _create_wrapper(original_create: Callable[..., Any]) -> Callable[..., Any]:
    part = state.PART
    getframe = sys._getframe
    pending_kinds = _pending_kinds
    parameters = inspect.signature(original_create).parameters
    keyword_only = all(p.kind is p.KEYWORD_ONLY for name, p in parameters.items() if name != "cls")
    if list(parameters) == ["cls", "deadline", "shield"] and keyword_only:
        # anyio 4's own signature: no *args/**kwargs to pack and unpack on every scope
        defaults = parameters["deadline"].default, parameters["shield"].default

        def create_exact(
            cls: type, *, deadline: float = defaults[0], shield: bool = defaults[1]
        ) -> Any:
            scope = original_create(cls, deadline=deadline, shield=shield)
            if part.enabled:
                code = getframe(1).f_code
                kind = pending_kinds.get(id(code))
                if kind is not None and kind[0] is code:
                    try:
                        _remember_kind(scope, kind[1])
                    except Exception as error:
                        part.fail(error)
            return scope

        return create_exact

    def create_cancel_scope(cls: type, *args: Any, **kwargs: Any) -> Any:
        scope = original_create(cls, *args, **kwargs)
        if part.enabled:
            code = getframe(1).f_code
            kind = pending_kinds.get(id(code))
            if kind is not None and kind[0] is code:
                try:
                    _remember_kind(scope, kind[1])
                except Exception as error:
                    part.fail(error)
        return scope

    return create_cancel_scope


def _enter_wrapper(original_enter: Callable[[Any], Any]) -> Callable[[Any], Any]:
    part = state.PART
    getframe = sys._getframe
    closed = _closed_scopes.codes
    enabled = instrumentation_enabled

    def __enter__(self: Any) -> Any:
        try:
            result = original_enter(self)
        except BaseException as raised:
            hide_own_frame(raised)
            raise
        if part.enabled:
            frame = getframe(1)
            code = frame.f_code
            # a self-contained library scope, or a task's own: untracked (see _task_scope)
            if closed.get(id(code)) is not code and code is not _task_body:
                try:
                    if enabled():
                        _on_enter(self, frame)
                    elif _pending:  # suppressed: untracked, its exit passes straight through
                        _pending.pop(id(self), None)
                except Exception as error:
                    part.fail(error)
        return result

    return __enter__


def _exit_wrapper(original_exit: Callable[..., Any]) -> Callable[..., Any]:  # noqa: PLR0915
    part = state.PART
    getframe = sys._getframe
    running_loop = state.running_loop
    task_of_loop = state.task_of_loop
    perf_counter = time.perf_counter
    facts = _facts
    ok = semconv.OUTCOME_OK

    def __exit__(self: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> Any:  # noqa: PLR0912
        tracker = state.tracker
        if tracker is None or not part.enabled:
            return original_exit(self, exc_type, exc_val, exc_tb)
        record = tracker.by_scope.get(id(self))
        if record is None:
            return original_exit(self, exc_type, exc_val, exc_tb)
        loop = running_loop()
        task = task_of_loop(loop) if loop is not None else None
        lifo = False
        try:
            # ScopeTracker.pop_innermost without its call: the innermost scope of its own task
            # exits, which cannot be a violation
            if record.obj is self and task is record.task:
                entry = tracker.by_task.get(id(task))
                stack = entry.records if entry is not None else None
                if stack and stack[-1] is record:
                    stack.pop()
                    tracker.by_scope.pop(id(self), None)
                    lifo = True
            if not lifo:
                record = tracker.exit_begin(self, task, getframe(1))
        except Exception as error:
            part.fail(error)
            record = None
        if record is None:
            return original_exit(self, exc_type, exc_val, exc_tb)
        try:
            suppressed = original_exit(self, exc_type, exc_val, exc_tb)
        except BaseException as raised:
            state.finish_exit(self, record, task, raised, facts)
            hide_own_frame(raised)
            raise
        if exc_val is not None:
            state.finish_exit(self, record, task, None if suppressed else exc_val, facts)
            return suppressed
        try:
            counts = tracker.ok_counts
            if lifo and counts is not None and perf_counter() - record.start <= tracker.slow:
                if record.user:  # what ScopeTracker.exit_ok does, without its call
                    key = (record.kind, ok)
                    try:  # += on the dict itself: no thread switch between its read and write
                        counts[key] += 1
                    except KeyError:
                        counts.setdefault(key, 0)
                        counts[key] += 1
            else:
                tracker.exit_ok(record, task, self, facts)
        except Exception as error:
            part.fail(error)
        return suppressed

    return __exit__


def _remember_kind(scope: object, kind: str) -> None:
    """Keep the kind of a scope ``move_on_after``/``move_on_at`` made, until it is entered."""
    if len(_pending) >= _PENDING_LIMIT:
        _pending.pop(next(iter(_pending), 0), None)  # another thread may have emptied it
    try:
        ref: Callable[[], object] = weakref.ref(scope)
    except TypeError:
        ref = functools.partial(_same, scope)
    _pending[id(scope)] = (ref, kind)


def _same(scope: object) -> object:
    return scope


def _on_enter(scope: Any, frame: FrameType) -> None:
    """Track a scope entered outside the self-contained library sites.

    The kind comes from the factory that made it (``move_on_*``), or from the function that
    entered it (``fail_*``, a task group's ``__aenter__``); the scope is the user's when the
    first frame past those (and contextlib's) is not library code.
    """
    tracker = state.tracker
    # anyio's own __enter__ just stored the current task there; asking again costs a call.
    task = getattr(scope, "_host_task", None) or state.current_task()
    if tracker is None or task is None:
        return
    kind = None
    if _pending:
        pending = _pending.pop(id(scope), None)
        if pending is not None and pending[0]() is scope:
            kind = pending[1]
    caller: FrameType | None = frame
    for _ in range(8):  # fail_after -> contextlib -> fail_at -> contextlib -> the caller
        if caller is None:
            break
        code = caller.f_code
        entering = _enter_kinds.get(id(code))
        if entering is not None and entering[0] is code:
            kind = entering[1]  # the outermost one is what the caller asked for
        elif code.co_filename != _CONTEXTLIB_FILE:
            break
        caller = caller.f_back
    user = False
    if caller is not None:
        code = caller.f_code
        info = _code_info.get(id(code))  # frames.is_internal, without its call
        user = not (info[1] if info is not None and info[0] is code else frames.is_internal(code))
    deadline = scope._deadline
    timeout = None
    if deadline != math.inf:
        timeout = max(0.0, deadline - task.get_loop().time())
    # A user scope's capture starts at the user frame: anyio's and contextlib's frames below it
    # are skipped anyway, and the tracker can reuse a capture only from a user frame.
    tracker.enter(
        scope,
        kind or semconv.SPAN_ANYIO_CANCEL_SCOPE,
        user,
        task,
        caller if user else frame,
        timeout,
        scope._shield,
    )


def _task_scope(task: Any) -> tuple[object, str, float | None, bool] | None:
    """``cancels.task_scope`` while installed (``_active``: asking the registry costs more)."""
    return cancels.task_scope(task) if _active else None


def _parents(scope: Any) -> Iterator[object]:
    parent = getattr(scope, "_parent_scope", None)
    while parent is not None:
        yield parent
        parent = getattr(parent, "_parent_scope", None)


def _facts(scope: Any) -> tuple[bool, bool, Iterator[object]]:
    return scope.cancel_called, scope.cancelled_caught, _parents(scope)
