"""Pieces shared by the remedies: step requests and outcomes, owner-task bookkeeping."""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

T = TypeVar("T")

_logger = logging.getLogger("scopewatch")

END: Any = object()
"""The outcome value of a step that found the generator exhausted."""


class Outcome(Generic[T]):
    """What one step of a generator produced: an item, the end, or an exception."""

    __slots__ = ("error", "value")

    def __init__(self, value: T | None = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error

    def unwrap(self) -> T:
        """The item, or raise the step's exception (``StopAsyncIteration`` at the end)."""
        if self.error is not None:
            raise self.error
        if self.value is END:
            raise StopAsyncIteration
        return self.value  # type: ignore[return-value]


class Request(Generic[T]):
    """One ``anext()`` waiting for the owner task to run a step."""

    __slots__ = ("abandoned", "outcome", "waker")

    def __init__(self, waker: Any) -> None:
        self.waker = waker
        """What the requester waits on (an ``asyncio.Future`` or an ``anyio.Event``)."""
        self.outcome: Outcome[T] | None = None
        self.abandoned = False
        """The requester stopped waiting (cancelled) before the step ran or finished."""


class Leftovers(Generic[T]):
    """Outcomes of steps whose requester gave up: the next ``anext()`` gets them, in order."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: deque[Outcome[T]] = deque()

    def put(self, outcome: Outcome[T], first: bool = False) -> None:
        """Keep an outcome nobody received (``first``: it was due before the others)."""
        if first:
            self._items.appendleft(outcome)
        else:
            self._items.append(outcome)

    def take(self) -> Outcome[T] | None:
        """The oldest kept outcome, or ``None``."""
        return self._items.popleft() if self._items else None


class Steps(Generic[T]):
    """The owner task's side: the outcome for the next request, a kept one first."""

    __slots__ = ("exhausted", "generator", "leftovers")

    def __init__(self, generator: AsyncIterator[T], leftovers: Leftovers[T]) -> None:
        self.generator = generator
        self.leftovers = leftovers
        self.exhausted = False

    async def next_outcome(self) -> Outcome[T]:
        """A kept outcome, or run one step of the generator here (in the owner task)."""
        kept = self.leftovers.take()
        if kept is not None:
            return kept
        if self.exhausted:
            return Outcome(END)
        try:
            return Outcome(await self.generator.__anext__())
        except StopAsyncIteration:
            self.exhausted = True
            return Outcome(END)
        except Exception as error:
            self.exhausted = True
            return Outcome(error=error)

    def final_outcome(self) -> Outcome[T]:
        """For a request still waiting once the owner has closed the generator."""
        return self.leftovers.take() or Outcome(END)


def hand_over(request: Request[T], outcome: Outcome[T], leftovers: Leftovers[T]) -> bool:
    """Give ``outcome`` to ``request``; keep it for the next ``anext()`` if it was abandoned.

    Returns:
        Whether the requester must be woken.
    """
    if request.abandoned:
        leftovers.put(outcome)
        return False
    request.outcome = outcome
    return True


def warn_slow_close(generator: object, timeout: float) -> None:
    """Log that closing ``generator`` exceeded its close timeout (it was cancelled)."""
    name = getattr(generator, "__qualname__", type(generator).__qualname__)
    _logger.warning(
        "scopewatch: closing async generator %s took longer than close_timeout=%ss; its "
        "cleanup was cancelled",
        name,
        timeout,
    )
