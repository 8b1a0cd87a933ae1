"""Fix hints chosen by scope kind, cause and the shape of the code (issue 16).

Every hint here is proven by ``tests/core/test_hints_proven.py``: the program with the bug violates,
the program changed as the hint says does not. A hint is picked from what a violation already
carries (kinds, cause, generator, the captured frames); nothing is captured for it.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scopewatch import semconv
from scopewatch._core import frames

if TYPE_CHECKING:
    from scopewatch._core.frames import Frames
    from scopewatch._core.records import Violation


@dataclass(frozen=True, slots=True)
class Hint:
    """One fix: ``key`` names it (tests prove each key), ``text`` is what users read."""

    key: str
    text: str


TASK_GROUP_KINDS = frozenset(
    {semconv.SPAN_ANYIO_TASK_GROUP, semconv.SPAN_ASYNCIO_TASK_GROUP, semconv.SPAN_TRIO_NURSERY}
)
ASYNCIO_TIMEOUT_KINDS = frozenset({semconv.SPAN_ASYNCIO_TIMEOUT, semconv.SPAN_ASYNCIO_TIMEOUT_AT})
_GENERATOR_CAUSES = frozenset(
    {
        semconv.CAUSE_ASYNCGEN_FINALIZER,
        semconv.CAUSE_ASYNCGEN_SHUTDOWN,
        semconv.CAUSE_ASYNCGEN_SUSPENDED,
        semconv.CAUSE_INTERLEAVED_GENERATORS,
    }
)
_PYTEST_ASYNCIO_PART = f"{os.sep}pytest_asyncio{os.sep}"

LINT_RULE = (
    "flake8-async ASYNC101 (yield inside a trio/anyio nursery or cancel scope) and ASYNC119 "
    "(yield in a context manager in an async generator; ruff ASYNC119, preview) flag this "
    "yield statically"
)

GENERATOR_TASK_GROUP = Hint(
    "generator_task_group",
    "a generator that yields inside a task group cannot be closed cleanly (closing it, with "
    "`aclosing`/`safe_aiter` too, raises BaseExceptionGroup[GeneratorExit]): make it an "
    "`@asynccontextmanager` that yields once (`async with gen() as value:`), or run its body "
    "in a task that sends the items to a memory object stream / asyncio.Queue and iterate that",
)
GENERATOR_CLOSE = Hint(
    "generator_close",
    "close the generator in the task that iterates it, right around the loop: "
    "`async with scopewatch.remedies.safe_aiter(gen(), close_timeout=5) as it: "
    "async for x in it: ...` (or `contextlib.aclosing`)",
)
GENERATOR_INTERLEAVED = Hint(
    "generator_interleaved",
    "advance and close one such generator at a time (close the last one opened first), or "
    "run each generator body in a task that streams its items and iterate the streams",
)
PER_STEP = Hint(
    "per_step",
    "drive the generator from one owner task: `stream = scopewatch.remedies."
    "OwnedGenerator(gen())` keeps `ensure_future(anext(stream))` working "
    "(anyio: `AnyioOwnedGenerator(gen(), task_group)`)",
)
FIXTURE_HOLD = Hint(
    "fixture_hold",
    "pytest drives this fixture, not your code: pytest-asyncio runs its setup (up to `yield`) "
    "and its teardown in different tasks, so what it enters before `yield` is exited in "
    "another task. Hold it in one owner task inside the fixture: `owned = await "
    "scopewatch.remedies.hold_in_task(client)`, `yield owned.value`, `await owned.aclose()`",
)
FIXTURE_TIMEOUT = Hint(
    "fixture_timeout",
    "an asyncio.timeout entered in a fixture never limits the test: pytest drives the "
    "fixture, and the test runs in another task than its setup. Put `async with "
    "asyncio.timeout(...)` in the test around the awaits it must limit (or use pytest-timeout)",
)
ASYNCIO_TIMEOUT = Hint(
    "asyncio_timeout",
    "enter and exit an asyncio.timeout in the same task: `async with asyncio.timeout(s):` "
    "around the awaits it must limit. One entered in one task and exited in another limits "
    "neither task, and asyncio raises nothing",
)
TASK_RETURNED = Hint(
    "task_returned",
    "keep the client's lifetime in one owner task: in connect() `self.owned = await "
    "scopewatch.remedies.hold_in_task(client)` (anyio on any backend: `await scopewatch."
    "remedies.anyio_hold_in_task(client, task_group)`), in cleanup() `await "
    "self.owned.aclose()`; or enter and exit the client in one task with `async with`",
)
OTHER_TASK = Hint(
    "other_task",
    "keep the client's whole lifetime in one owner task: `owned = await scopewatch."
    "remedies.hold_in_task(client)`, then `await owned.aclose()` from any task "
    "(anyio: `await anyio_hold_in_task(client, task_group)`)",
)
EXIT_ORDER = Hint(
    "exit_order",
    "close context managers / exit stacks in reverse order of entry (the last one entered "
    "first), or enter them all on one AsyncExitStack",
)
TIMEOUT_CONVERTED = Hint(
    "timeout_converted",
    "until CPython fixes gh-134471: in `except TimeoutError`, `raise asyncio.CancelledError` "
    "when `asyncio.current_task().cancelling()` is non-zero",
)
CANCEL_SWALLOWED = Hint(
    "cancel_swallowed",
    "re-raise CancelledError after cleanup, or call task.uncancel() if you really mean to "
    "swallow it",
)
TASK_FINISHED = Hint(
    "task_finished",
    "exit the scope before its task ends (`with`/`async with`); to keep a client open "
    "beyond the task that opened it use `scopewatch.remedies.hold_in_task(client)`",
)

ALL: tuple[Hint, ...] = (
    GENERATOR_TASK_GROUP,
    GENERATOR_CLOSE,
    GENERATOR_INTERLEAVED,
    PER_STEP,
    FIXTURE_HOLD,
    FIXTURE_TIMEOUT,
    ASYNCIO_TIMEOUT,
    TASK_RETURNED,
    OTHER_TASK,
    EXIT_ORDER,
    TIMEOUT_CONVERTED,
    CANCEL_SWALLOWED,
    TASK_FINISHED,
)
"""Every hint scopewatch can print."""


def choose(violation: Violation) -> Hint | None:
    """The hint for this violation's kind, cause and code shape (``None``: none fits)."""
    for pick in (_swallowed, _fixture, _generator, _by_cause):
        chosen = pick(violation)
        if chosen is not None:
            return chosen
    return None


def _swallowed(violation: Violation) -> Hint | None:
    if violation.kind != semconv.KIND_CANCEL_SWALLOWED:
        return None
    if violation.cause == semconv.CAUSE_TIMEOUT_CONVERTED:
        return TIMEOUT_CONVERTED
    return CANCEL_SWALLOWED


def _fixture(violation: Violation) -> Hint | None:
    if not _in_pytest_fixture(violation):
        return None
    return FIXTURE_TIMEOUT if violation.scope_kind in ASYNCIO_TIMEOUT_KINDS else FIXTURE_HOLD


def _generator(violation: Violation) -> Hint | None:
    cause = violation.cause
    if cause not in _GENERATOR_CAUSES and not (
        cause == semconv.CAUSE_LOOP_CLOSED and violation.asyncgen
    ):
        return None
    if violation.asyncgen_managed and not app_generator(violation.enter_frames):
        # A library's context manager (``stdio_client``) kept open by the application, on an
        # exit stack or an object, and closed elsewhere: the client's lifetime is the bug.
        return OTHER_TASK
    if _generator_holds_group(violation):
        return GENERATOR_TASK_GROUP
    if cause == semconv.CAUSE_INTERLEAVED_GENERATORS:
        return GENERATOR_INTERLEAVED
    return GENERATOR_CLOSE


_BY_CAUSE = {
    semconv.CAUSE_PER_STEP_TASK: PER_STEP,
    semconv.CAUSE_TASK_RETURNED: TASK_RETURNED,
    semconv.CAUSE_EXIT_ORDER: EXIT_ORDER,
}


def _by_cause(violation: Violation) -> Hint | None:
    if violation.kind == semconv.KIND_SCOPE_LEAKED:
        return TASK_FINISHED
    chosen = _BY_CAUSE.get(violation.cause)
    if chosen is not None:
        return chosen
    if (
        violation.kind == semconv.KIND_CROSS_TASK_EXIT
        and violation.scope_kind in ASYNCIO_TIMEOUT_KINDS
    ):
        return ASYNCIO_TIMEOUT
    return OTHER_TASK if violation.cause == semconv.CAUSE_OTHER_TASK else None


def lint_rule(violation: Violation) -> str:
    """The static rule that would have flagged the code, ``""`` when none applies.

    An application async generator yielding inside a cancel scope or task group (not an
    ``@asynccontextmanager``, not a pytest fixture, which the rules exempt).
    """
    if violation.cause not in _GENERATOR_CAUSES and violation.cause != semconv.CAUSE_PER_STEP_TASK:
        return ""
    generator = app_generator(violation.enter_frames)
    if _in_pytest_fixture(violation) or not generator:
        return ""
    return f"{LINT_RULE} (the yield in {generator})"


def _generator_holds_group(violation: Violation) -> bool:
    """The scope is a task group, or a session (SDK sessions hold one for their reader)."""
    kind = violation.scope_kind
    return kind in TASK_GROUP_KINDS or kind.startswith(semconv.SPAN_SESSION_PREFIX)


def app_generator(kept: Frames) -> str:
    """``__qualname__`` of the first application async generator among ``kept``."""
    for code, _line in kept:
        if code.co_flags & inspect.CO_ASYNC_GENERATOR and frames.is_app_file(code.co_filename):
            return frames.qualname(code)
    return ""


def _in_pytest_fixture(violation: Violation) -> bool:
    """Entered or exited by pytest-asyncio's fixture driver (setup and teardown tasks)."""
    return any(
        _PYTEST_ASYNCIO_PART in code.co_filename
        for kept in (violation.enter_frames, violation.exit_frames)
        for code, _line in kept
    )
