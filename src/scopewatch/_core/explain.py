"""Human explanations of violations: exception notes, log lines and report hints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scopewatch import semconv
from scopewatch._core import frames

if TYPE_CHECKING:
    from scopewatch._core.records import Violation

CAUSE_TEXT: dict[str, str] = {
    semconv.CAUSE_ASYNCGEN_FINALIZER: (
        "the async generator was abandoned un-closed (e.g. `break` out of `async for`) and the "
        "event loop's finalizer (on trio: trio's own) ran its aclose() in a new task"
    ),
    semconv.CAUSE_ASYNCGEN_SHUTDOWN: (
        "the async generator was still open when the loop shut down, and "
        "loop.shutdown_asyncgens() (on trio: the end of trio.run) closed it in another task"
    ),
    semconv.CAUSE_PER_STEP_TASK: (
        "each step of the async generator ran in a fresh task "
        "(ensure_future(anext(gen)) / wait_for(anext(gen)))"
    ),
    semconv.CAUSE_INTERLEAVED_GENERATORS: (
        "two async generators that each yield inside a scope were advanced alternately by one task"
    ),
    semconv.CAUSE_ASYNCGEN_SUSPENDED: (
        "an async generator that yields inside a scope was left suspended (not closed, e.g. "
        "after `break`) and still holds that scope when the code around the loop exits its own"
    ),
    semconv.CAUSE_EXIT_ORDER: (
        "context managers were closed first-in-first-out (e.g. two exit stacks closed in the "
        "wrong order)"
    ),
    semconv.CAUSE_OTHER_TASK: (
        "a stored context manager / exit stack was closed from another task than the one "
        "that entered it"
    ),
    semconv.CAUSE_TASK_RETURNED: (
        "the task that entered the scope returned while scopes it had entered (held by an exit "
        "stack or a connection object) were still open; they are closed later, elsewhere"
    ),
    semconv.CAUSE_TASK_FINISHED: "the task that entered the scope finished without exiting it",
    semconv.CAUSE_LOOP_CLOSED: (
        "the event loop closed while the task that entered the scope was still pending"
    ),
    semconv.CAUSE_CANCEL_CAUGHT: (
        "the task caught the CancelledError (`except CancelledError`/`BaseException`, "
        "`suppress`) and returned normally"
    ),
    semconv.CAUSE_TIMEOUT_CONVERTED: (
        "the cancellation was requested before the task entered an asyncio.timeout and was "
        "still pending when that timeout expired; asyncio counted it as the timeout's own and "
        "raised one TimeoutError (CPython gh-134471)"
    ),
    semconv.CAUSE_UNKNOWN: "the cause could not be determined",
}

HINTS: dict[str, str] = {
    semconv.CAUSE_ASYNCGEN_FINALIZER: (
        "close the generator in the task that iterates it, right around the loop: "
        "`async with scopewatch.remedies.safe_aiter(gen(), close_timeout=5) as it: "
        "async for x in it: ...` (or `contextlib.aclosing`)"
    ),
    semconv.CAUSE_ASYNCGEN_SHUTDOWN: (
        "close the generator before the loop ends, in the task that iterates it: "
        "`async with scopewatch.remedies.safe_aiter(gen()) as it: ...`"
    ),
    semconv.CAUSE_ASYNCGEN_SUSPENDED: (
        "close the generator before leaving the enclosing scope: "
        "`async with scopewatch.remedies.safe_aiter(gen()) as it: async for x in it: ...`"
    ),
    semconv.CAUSE_PER_STEP_TASK: (
        "drive the generator from one owner task: `stream = scopewatch.remedies."
        "OwnedGenerator(gen())` keeps `ensure_future(anext(stream))` working "
        "(anyio: `AnyioOwnedGenerator(gen(), task_group)`)"
    ),
    semconv.CAUSE_INTERLEAVED_GENERATORS: (
        "do not yield inside a cancel scope/task group from a generator; run the generator "
        "body in a task and stream its items"
    ),
    semconv.CAUSE_EXIT_ORDER: "close context managers / exit stacks in reverse order of entry",
    semconv.CAUSE_OTHER_TASK: (
        "keep the client's whole lifetime in one owner task: `owned = await scopewatch."
        "remedies.hold_in_task(client)`, then `await owned.aclose()` from any task "
        "(anyio: `await anyio_hold_in_task(client, task_group)`)"
    ),
    semconv.CAUSE_TASK_RETURNED: (
        "keep the client's lifetime in one owner task: in connect() "
        "`self.owned = await scopewatch.remedies.hold_in_task(client)` (anyio: "
        "`await scopewatch.remedies.anyio_hold_in_task(client, task_group)`), in cleanup() "
        "`await self.owned.aclose()`; or enter and exit the client in one task with `async with`"
    ),
    semconv.CAUSE_TASK_FINISHED: (
        "exit the scope before its task ends (`with`/`async with`); to keep a client open "
        "beyond the task that opened it use `scopewatch.remedies.hold_in_task(client)`"
    ),
    semconv.CAUSE_TIMEOUT_CONVERTED: (
        "until CPython fixes gh-134471: in `except TimeoutError`, `raise asyncio.CancelledError` "
        "when `asyncio.current_task().cancelling()` is non-zero"
    ),
    semconv.KIND_CANCEL_SWALLOWED: (
        "re-raise CancelledError after cleanup, or call task.uncancel() if you really mean to "
        "swallow it"
    ),
    semconv.KIND_SCOPE_LEAKED: "enter scopes with `with`/`async with` so they are always exited",
}

KIND_TEXT: dict[str, str] = {
    semconv.KIND_CROSS_TASK_EXIT: "exited in a different task than the one that entered it",
    semconv.KIND_NON_LIFO_EXIT: "exited while it was not the task's innermost scope",
    semconv.KIND_SCOPE_LEAKED: "was never exited",
    semconv.KIND_CANCEL_SWALLOWED: "was swallowed",
}


def hint(violation: Violation) -> str:
    """A one-line fix hint for the violation's cause (or kind)."""
    return HINTS.get(violation.cause) or HINTS.get(violation.kind, "")


def explain(violation: Violation) -> str:
    """A multi-line explanation naming both tasks, both locations, the generator and the cause."""
    subject = "task's cancellation" if violation.kind == semconv.KIND_CANCEL_SWALLOWED else "scope"
    lines = [
        f"scopewatch: {violation.kind} ({violation.cause}): this {violation.scope_kind} {subject} "
        f"{KIND_TEXT.get(violation.kind, violation.kind)}.",
    ]
    swallowed = violation.kind == semconv.KIND_CANCEL_SWALLOWED
    first, second = ("delivered to", "requested by") if swallowed else ("entered in", "exited in")
    entered = frames.explained_location(violation.enter_frames) or "an unknown location"
    lines.append(f"  {first} task {violation.enter_task!r} at {entered}")
    if violation.cause == semconv.CAUSE_TASK_RETURNED and not violation.exit_frames:
        lines.append(f"  {second} task {violation.exit_task!r} when its body returned")
    elif violation.exit_task or violation.exit_frames:
        exited = frames.explained_location(violation.exit_frames) or "an unknown location"
        lines.append(f"  {second} task {violation.exit_task!r} at {exited}")
    if violation.asyncgen:
        lines.append(f"  inside async generator {violation.asyncgen}")
    if violation.cause != semconv.CAUSE_UNKNOWN:
        lines.append(f"  cause: {CAUSE_TEXT.get(violation.cause, violation.cause)}")
    if violation.detail:
        lines.append(f"  {violation.detail}")
    fix = hint(violation)
    if fix:
        lines.append(f"  fix: {fix}")
    return "\n".join(lines)
