"""Human explanations of violations: exception notes, log lines and report hints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scopewatch import semconv
from scopewatch._core import frames, hints

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
    semconv.CAUSE_ASYNCGEN_FINALIZER: hints.GENERATOR_CLOSE.text,
    semconv.CAUSE_ASYNCGEN_SHUTDOWN: hints.GENERATOR_CLOSE.text,
    semconv.CAUSE_ASYNCGEN_SUSPENDED: hints.GENERATOR_CLOSE.text,
    semconv.CAUSE_PER_STEP_TASK: hints.PER_STEP.text,
    semconv.CAUSE_INTERLEAVED_GENERATORS: hints.GENERATOR_INTERLEAVED.text,
    semconv.CAUSE_EXIT_ORDER: hints.EXIT_ORDER.text,
    semconv.CAUSE_OTHER_TASK: hints.OTHER_TASK.text,
    semconv.CAUSE_TASK_RETURNED: hints.TASK_RETURNED.text,
    semconv.CAUSE_TASK_FINISHED: hints.TASK_FINISHED.text,
    semconv.CAUSE_TIMEOUT_CONVERTED: hints.TIMEOUT_CONVERTED.text,
    semconv.KIND_CANCEL_SWALLOWED: hints.CANCEL_SWALLOWED.text,
    semconv.KIND_SCOPE_LEAKED: hints.TASK_FINISHED.text,
}
"""The hint by cause alone, for reports built from spans; :func:`hint` also reads the shape
of the code (``scopewatch._core.hints``)."""

KIND_TEXT: dict[str, str] = {
    semconv.KIND_CROSS_TASK_EXIT: "exited in a different task than the one that entered it",
    semconv.KIND_NON_LIFO_EXIT: "exited while it was not the task's innermost scope",
    semconv.KIND_SCOPE_LEAKED: "was never exited",
    semconv.KIND_CANCEL_SWALLOWED: "was swallowed",
}


def hint(violation: Violation) -> str:
    """A one-line fix hint for the violation's kind, cause and code shape."""
    chosen = hints.choose(violation)
    if chosen is not None:
        return chosen.text
    return HINTS.get(violation.cause) or HINTS.get(violation.kind, "")


def fix_in(explanation: str) -> str:
    """The ``fix:`` hint of an explanation made by :func:`explain` (``""`` if it has none).

    Reports built from spans show the hint chosen for the code's shape, the note's own.
    """
    for line in explanation.splitlines():
        if line.startswith(_FIX):
            return line[len(_FIX) :]
    return ""


_FIX = "  fix: "


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
        holder = hints.app_generator(violation.enter_frames)
        held = f", held open by application generator {holder}" if holder else ""
        if holder == violation.asyncgen:
            held = ""
        lines.append(f"  inside async generator {violation.asyncgen}{held}")
    if violation.cause != semconv.CAUSE_UNKNOWN:
        lines.append(f"  cause: {CAUSE_TEXT.get(violation.cause, violation.cause)}")
    if violation.detail:
        lines.append(f"  {violation.detail}")
    fix = hint(violation)
    if fix:
        lines.append(f"{_FIX}{fix}")
    rule = hints.lint_rule(violation)
    if rule:
        lines.append(f"  lint: {rule}")
    return "\n".join(lines)
