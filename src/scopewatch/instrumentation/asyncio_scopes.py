"""``asyncio.timeout`` / ``timeout_at`` and ``asyncio.TaskGroup`` (Python 3.11+).

asyncio never checks which task exits these: a timeout exited in another task silently cancels
the wrong task later. The wrappers record enter and exit so the tracker can say so.
``__aenter__``/``__aexit__`` are library coroutine methods; the user's coroutines are untouched.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
import weakref
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import cancels, frames
from scopewatch.instrumentation import _scope_state as state
from scopewatch.instrumentation._patching import Patches, hide_own_frame
from scopewatch.instrumentation._running_loop import running_loop as _running_loop
from scopewatch.instrumentation._suppression import instrumentation_enabled

if TYPE_CHECKING:
    from collections.abc import Callable

_PENDING_LIMIT = 4096
_TIMEOUT_CREATED: Any = None
"""``asyncio.timeouts._State.CREATED``: a timeout not entered yet."""
_code_info = frames._code_info
_patches = Patches()
_pending_kinds: dict[int, tuple[weakref.ref[Any], str]] = {}
"""``asyncio.timeout()`` objects not yet entered: id -> (weak reference, kind). Weak: one
created and never entered must not be kept."""


def install(runtime: Any) -> None:
    """Patch ``asyncio.timeouts.Timeout`` and ``asyncio.TaskGroup`` when Python has them."""
    del runtime  # the tracker is the feature's (``_scope_state.start``)
    if sys.version_info >= (3, 11):
        _install()


def _install() -> None:
    import asyncio.taskgroups
    import asyncio.timeouts

    timeout_class = asyncio.timeouts.Timeout
    group_class = asyncio.taskgroups.TaskGroup
    timeout_code = asyncio.timeouts.timeout.__code__
    patch = _patches.patch
    patch(timeout_class, "__init__", lambda original: _timeout_init(original, timeout_code))
    global _TIMEOUT_CREATED
    _TIMEOUT_CREATED = getattr(getattr(asyncio.timeouts, "_State", None), "CREATED", None)
    patch(timeout_class, "__aenter__", _timeout_aenter)
    patch(timeout_class, "__aexit__", lambda original: _aexit(original, _timeout_facts))
    patch(timeout_class, "_on_timeout", _on_timeout)
    patch(group_class, "__aenter__", _group_aenter)
    patch(group_class, "__aexit__", lambda original: _aexit(original, _group_facts))
    patch(group_class, "_abort", _abort)
    if "cancel" in group_class.__dict__:  # 3.15+ (gh-108951); its _abort() call comes second
        patch(group_class, "cancel", _group_cancel)


def uninstall() -> None:
    """Restore every original."""
    _patches.restore()
    _pending_kinds.clear()


def _timeout_kind(timeout: Any) -> str:
    pending = _pending_kinds.pop(id(timeout), None)
    if pending is not None and pending[0]() is timeout:
        return pending[1]
    return semconv.SPAN_ASYNCIO_TIMEOUT_AT


def _timeout_facts(timeout: Any) -> tuple[bool, bool, tuple[()]]:
    return bool(timeout.expired()), False, ()


def _group_facts(group: Any) -> tuple[bool, bool, tuple[()]]:
    return bool(getattr(group, "_aborting", False)), False, ()


def _timeout_init(original: Callable[..., None], timeout_code: Any) -> Callable[..., None]:
    part = state.PART
    getframe = sys._getframe

    def remember(timeout: Any) -> None:
        if len(_pending_kinds) >= _PENDING_LIMIT:  # another thread may have emptied it
            _pending_kinds.pop(next(iter(_pending_kinds), 0), None)
        _pending_kinds[id(timeout)] = (weakref.ref(timeout), semconv.SPAN_ASYNCIO_TIMEOUT)

    if list(inspect.signature(original).parameters) == ["self", "when"]:

        def exact_init(self: Any, when: Any) -> None:  # 3.11+: no *args/**kwargs to pack
            original(self, when)
            if part.enabled and getframe(1).f_code is timeout_code:
                remember(self)

        return exact_init

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if part.enabled and getframe(1).f_code is timeout_code:
            remember(self)

    return __init__


def _timeout_aenter(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Timeout.__aenter__`` recording the enter as it is called, no coroutine of its own.

    asyncio's ``__aenter__`` never suspends and fails only when the timeout is not in its
    created state or runs outside a task, both checked first; ``async with`` awaits it at once,
    so no other code runs between the record and the enter. When a check fails, the original
    raises as it would, and nothing is recorded.
    """
    part = state.PART
    getframe = sys._getframe
    running_loop = _running_loop
    task_of_loop = state.task_of_loop
    enabled = instrumentation_enabled

    def __aenter__(self: Any) -> Any:
        if part.enabled:
            loop = running_loop()
            task = task_of_loop(loop) if loop is not None else None
            try:
                if task is not None and getattr(self, "_state", None) is _TIMEOUT_CREATED:
                    if enabled():
                        when = self.when()
                        timeout = None if when is None else max(0.0, when - loop.time())
                        _on_enter(self, _timeout_kind(self), getframe(1), task, timeout)
                    elif _pending_kinds:  # suppressed: untracked, its exit passes straight through
                        _pending_kinds.pop(id(self), None)
            except Exception as error:
                part.fail(error)
        return original(self)

    return __aenter__


def _group_aenter(original: Callable[..., Any]) -> Callable[..., Any]:
    """``TaskGroup.__aenter__`` recording the enter, as :func:`_timeout_aenter` does.

    The original fails only when the group was entered already or belongs to another loop.
    """
    part = state.PART
    getframe = sys._getframe
    running_loop = _running_loop
    task_of_loop = state.task_of_loop
    enabled = instrumentation_enabled
    kind = semconv.SPAN_ASYNCIO_TASK_GROUP

    def __aenter__(self: Any) -> Any:
        if part.enabled:
            loop = running_loop()
            task = task_of_loop(loop) if loop is not None else None
            try:
                own_loop = getattr(self, "_loop", loop)
                if (
                    task is not None
                    and getattr(self, "_entered", True) is False
                    and (own_loop is None or own_loop is loop)
                    and enabled()
                ):
                    _on_enter(self, kind, getframe(1), task, None)
            except Exception as error:
                part.fail(error)
        return original(self)

    return __aenter__


def _on_enter(scope: Any, kind: str, frame: Any, task: Any, timeout: float | None) -> None:
    tracker = state.tracker
    if tracker is None:
        return
    code = frame.f_code
    info = _code_info.get(id(code))  # frames.is_internal, without its call
    user = not (info[1] if info is not None and info[0] is code else frames.is_internal(code))
    tracker.enter(scope, kind, user, task, frame, timeout)


def _aexit(original: Callable[..., Any], read_facts: state.ScopeFacts) -> Callable[..., Any]:  # noqa: PLR0915
    """The ``__aexit__`` coroutine: awaits the original to see how the exit ends.

    The common exit (the innermost scope of the task that entered it, ending normally and not
    slow) is popped and counted inline, as ``anyio_scopes``' exit wrapper does:
    ``ScopeTracker.pop_innermost`` and ``exit_ok`` without their calls.
    """
    part = state.PART
    getframe = sys._getframe
    running_loop = _running_loop
    task_of_loop = state.task_of_loop
    perf_counter = time.perf_counter
    ok = semconv.OUTCOME_OK

    async def __aexit__(self: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> Any:  # noqa: PLR0912
        tracker = state.tracker
        if tracker is None or not part.enabled:
            return await original(self, exc_type, exc_val, exc_tb)
        record = tracker.by_scope.get(id(self))
        if record is None:
            return await original(self, exc_type, exc_val, exc_tb)
        loop = running_loop()
        task = task_of_loop(loop) if loop is not None else None
        lifo = False
        try:
            if record.obj is self and task is record.task:  # innermost of its own task?
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
            return await original(self, exc_type, exc_val, exc_tb)
        try:
            suppressed = await original(self, exc_type, exc_val, exc_tb)
        except BaseException as raised:
            state.finish_exit(self, record, task, raised, read_facts)
            hide_own_frame(raised)
            raise
        if exc_val is not None:
            state.finish_exit(self, record, task, None if suppressed else exc_val, read_facts)
            return suppressed
        try:
            counts = tracker.ok_counts
            if (
                lifo
                and counts is not None
                and not record.violations
                and perf_counter() - record.start <= tracker.slow
            ):
                if record.user:  # what ScopeTracker.exit_ok does, without its call
                    key = (record.kind, ok)
                    try:  # += on the dict itself: no thread switch between its read and write
                        counts[key] += 1
                    except KeyError:
                        counts.setdefault(key, 0)
                        counts[key] += 1
            else:
                tracker.exit_ok(record, task, self, read_facts)
        except Exception as error:
            part.fail(error)
        return suppressed

    return __aexit__


def _on_timeout(original: Callable[[Any], None]) -> Callable[[Any], None]:
    part = state.PART

    def _on_timeout(self: Any) -> None:
        tracker = state.tracker
        if part.enabled and tracker is not None:
            try:
                tracker.cancel_requested(
                    self, semconv.ORIGIN_DEADLINE, None, "", "deadline exceeded"
                )
            except Exception as error:
                part.fail(error)
        original(self)

    return _on_timeout


def _abort(original: Callable[[Any], None]) -> Callable[[Any], None]:
    part = state.PART

    def _abort(self: Any) -> None:
        tracker = state.tracker
        if part.enabled and tracker is not None:
            try:
                caller = sys._getframe(1)
                tracker.cancel_requested(
                    self,
                    semconv.ORIGIN_PARENT,
                    state.current_task(),
                    state.user_location(caller),
                    "task group aborted: a child task failed or the body raised",
                    failure=_failing(caller),
                )
            except Exception as error:
                part.fail(error)
        original(self)

    return _abort


def _group_cancel(original: Callable[[Any], None]) -> Callable[[Any], None]:
    """``TaskGroup.cancel()`` (3.15+): an explicit cancel by its caller, a normal way out."""
    part = state.PART

    def cancel(self: Any) -> None:
        tracker = state.tracker
        if part.enabled and tracker is not None and getattr(self, "_entered", False):
            try:
                tracker.cancel_requested(
                    self,
                    semconv.ORIGIN_EXPLICIT,
                    state.current_task(),
                    state.user_location(sys._getframe(1)),
                    "TaskGroup.cancel()",
                )
            except Exception as error:
                part.fail(error)
        original(self)

    cancel.__doc__ = original.__doc__
    return cancel


def _failing(caller: Any) -> bool:
    """Whether a ``TaskGroup`` aborts because a child or the body raised (not a cancellation).

    ``_on_task_done`` aborts only for a child's error; ``__aexit__`` (``et``: the body's
    exception type) also aborts when the cancellation of the group's task reaches the body.
    """
    role = cancels.role_of(caller.f_code)
    if role == cancels.GROUP_CHILD_DONE:
        return True
    if role == cancels.GROUP_BODY:
        error_type = frames.local_of(caller, "et")
        return isinstance(error_type, type) and not issubclass(error_type, asyncio.CancelledError)
    return False
