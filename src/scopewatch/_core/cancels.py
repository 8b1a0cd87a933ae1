"""Who asked a task to cancel: the frames of a ``Task.cancel()`` call, classified.

Well-known library frames on the calling stack tell the origin: an ``asyncio.timeout`` timer,
``wait_for``, a ``TaskGroup`` aborting (and which child failed), anyio delivering a cancel
scope's cancellation, ``asyncio.run`` shutting down, or a cancelled task passing the
cancellation on to the task it awaits. The first user frame gives the location. ``Task.cancel``
is rare next to task creation, so this may walk frames and read library frames' locals (never
recorded: only used to find the scope or task they name).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scopewatch._core import frames

if TYPE_CHECKING:
    from types import CodeType, FrameType

TIMEOUT = "timeout"
WAIT_FOR = "wait_for"
GATHER = "gather"
GROUP_ABORT = "group_abort"
GROUP_CHILD_DONE = "group_child_done"
GROUP_BODY = "group_body"
ANYIO_DELIVER = "anyio_deliver"
ANYIO_CHILD_DONE = "anyio_child_done"
SHUTDOWN = "shutdown"
SIGINT = "sigint"
PROPAGATE = "propagate"
"""A cancelled task passes the cancellation on to the future it awaits (another task)."""
BOUNDARY = "boundary"
"""The event loop running a callback: frames beyond it are not the requester's."""

_LIMIT = 16
"""Frames examined at most per ``cancel()`` call."""

_KNOWN: dict[str, tuple[tuple[str, str], ...]] = {
    "_on_timeout": (("asyncio/timeouts.py", TIMEOUT),),
    "wait_for": (("asyncio/tasks.py", WAIT_FOR),),
    "cancel": (("asyncio/tasks.py", GATHER),),
    "_abort": (("asyncio/taskgroups.py", GROUP_ABORT),),
    "_on_task_done": (("asyncio/taskgroups.py", GROUP_CHILD_DONE),),
    "__aexit__": (("asyncio/taskgroups.py", GROUP_BODY),),
    "_aexit": (("asyncio/taskgroups.py", GROUP_BODY),),
    "_cancel_all_tasks": (("asyncio/runners.py", SHUTDOWN),),
    "_on_sigint": (("asyncio/runners.py", SIGINT),),
    "_deliver_cancellation": (("anyio/_backends/_asyncio.py", ANYIO_DELIVER),),
    "task_done": (("anyio/_backends/_asyncio.py", ANYIO_CHILD_DONE),),
    "_run": (("asyncio/events.py", BOUNDARY),),
    "_run_once": (("asyncio/base_events.py", BOUNDARY),),
    "run_forever": (("asyncio/base_events.py", BOUNDARY),),
    "run_until_complete": (("asyncio/base_events.py", BOUNDARY),),
    "run": (("asyncio/runners.py", BOUNDARY),),
}
"""``co_name`` -> (file path suffix, role) of library functions that call ``Task.cancel()``."""

_roles: dict[CodeType, str] = {}


def register_role(code: CodeType, role: str) -> None:
    """Give ``code`` a role (the instrumentation registers its own ``Task.cancel``)."""
    _roles[code] = role


def role_of(code: CodeType) -> str:
    """The role of a function in cancelling tasks, ``""`` for none (cached per code object)."""
    role = _roles.get(code)
    if role is not None:
        return role
    role = ""
    for suffix, known in _KNOWN.get(code.co_name, ()):
        if code.co_filename.replace(os.sep, "/").endswith("/" + suffix):
            role = known
            break
    _roles[code] = role
    return role


@dataclass(slots=True)
class CancelCall:
    """The stack of one ``Task.cancel()`` call: library roles (innermost first), the user frame."""

    roles: list[tuple[str, FrameType]] = field(default_factory=list)
    user: FrameType | None = None

    def first(self) -> str:
        """The innermost role, or ``""``."""
        return self.roles[0][0] if self.roles else ""

    def frame_of(self, role: str, outermost: bool = False) -> FrameType | None:
        """The innermost (or outermost) frame playing ``role``."""
        found_frame = None
        for found, frame in self.roles:
            if found == role:
                if not outermost:
                    return frame
                found_frame = frame
        return found_frame

    def local(self, role: str, name: str, outermost: bool = False) -> Any:
        """A local variable of the frame playing ``role`` (a library frame), or ``None``."""
        frame = self.frame_of(role, outermost)
        if frame is None:
            return None
        try:
            return frames.local_of(frame, name)
        except Exception:  # a frame proxy that cannot be read: no attribution, no harm
            return None


def walk(frame: FrameType | None) -> CancelCall:
    """Classify the frames from the caller of ``Task.cancel()`` outwards to the first user frame."""
    call = CancelCall()
    walked = 0
    while frame is not None and walked < _LIMIT:
        code = frame.f_code
        role = role_of(code)
        if role == BOUNDARY:
            break
        if role:
            call.roles.append((role, frame))
        elif not frames.is_internal(code):
            call.user = frame
            break
        frame = frame.f_back
        walked += 1
    return call


def requester_frames(frame: FrameType | None, depth: int) -> frames.Frames:
    """User frames from ``frame`` outwards, innermost first, stopping at the event loop."""
    kept: list[tuple[CodeType, int]] = []
    walked = 0
    while frame is not None and len(kept) < depth and walked < _LIMIT * 4:
        code = frame.f_code
        if role_of(code) == BOUNDARY:
            break
        if not frames.is_internal(code):
            kept.append((code, frame.f_lineno))
        frame = frame.f_back
        walked += 1
    return tuple(kept)


def suspended_frames(coro: Any, depth: int) -> frames.Frames:
    """Where a task's coroutine chain is suspended now, innermost user frame first."""
    chain: list[tuple[CodeType, int]] = []
    current = coro
    for _ in range(_LIMIT * 2):
        if current is None:
            break
        frame = (
            getattr(current, "cr_frame", None)
            or getattr(current, "gi_frame", None)
            or getattr(current, "ag_frame", None)
        )
        if frame is not None:
            chain.append((frame.f_code, frame.f_lineno))
        current = (
            getattr(current, "cr_await", None)
            or getattr(current, "gi_yieldfrom", None)
            or getattr(current, "ag_await", None)
        )
    kept = [entry for entry in reversed(chain) if not frames.is_internal(entry[0])]
    return tuple(kept[: max(depth, 1)])


def raise_location(error: BaseException | None) -> str:
    """``file:line`` of the innermost user frame where ``error`` was raised, or ``""``."""
    tb = error.__traceback__ if error is not None else None
    found = ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if not frames.is_internal(code):
            found = f"{code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found
