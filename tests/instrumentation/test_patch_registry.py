"""The patch registry alone: every kind of target, stacked patches, restore in any order."""

from __future__ import annotations

import itertools
import types
from typing import Any

import pytest

from scopewatch.instrumentation._patching import MISSING, Patches, Registry


def tagged(tag: str) -> Any:
    """A ``make`` whose wrapper calls the original and appends ``tag`` to its result."""

    def make(original: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            return [*original(*args), tag]

        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        return wrapper

    return make


class Base:
    def method(self) -> list[str]:
        return ["base"]


class Owner(Base):
    def own(self) -> list[str]:
        return ["own"]

    @classmethod
    def build(cls) -> list[str]:
        return [cls.__name__]

    @staticmethod
    def plain() -> list[str]:
        return ["plain"]


def closure_of(value: object) -> Any:
    def reader() -> object:
        return value

    return reader


@pytest.fixture
def registry() -> Registry:
    return Registry()


def test_an_own_attribute_is_wrapped_then_put_back_by_identity(registry):
    original = Owner.__dict__["own"]
    patches = Patches(registry)
    patches.patch(Owner, "own", tagged("a"))
    assert Owner().own() == ["own", "a"]
    assert patches and len(registry) == 1
    patches.restore()
    assert Owner.__dict__["own"] is original
    assert not patches and len(registry) == 0


def test_an_inherited_attribute_is_removed_again(registry):
    patches = Patches(registry)
    patches.patch(Owner, "method", tagged("a"))
    assert "method" in Owner.__dict__
    assert Owner().method() == ["base", "a"]
    [target] = registry.targets()
    assert target.original is MISSING
    patches.restore()
    assert "method" not in Owner.__dict__
    assert Owner().method() == ["base"]


@pytest.mark.parametrize(
    ("name", "kind", "call"),
    [
        ("build", classmethod, lambda: Owner.build()),
        ("plain", staticmethod, lambda: Owner().plain()),
    ],
)
def test_a_classmethod_or_staticmethod_stays_one(registry, name, kind, call):
    original = Owner.__dict__[name]
    seen: list[Any] = []

    def make(function: Any) -> Any:
        seen.append(function)
        return tagged("a")(function)

    patches = Patches(registry)
    patches.patch(Owner, name, make)
    assert seen == [original.__func__]
    assert isinstance(Owner.__dict__[name], kind)
    assert call()[-1] == "a"
    patches.restore()
    assert Owner.__dict__[name] is original


def test_a_make_that_returns_the_descriptor_itself_is_not_wrapped_twice(registry):
    patches = Patches(registry)
    patches.patch(Owner, "build", lambda function: classmethod(tagged("a")(function)))
    assert Owner.build() == ["Owner", "a"]
    patches.restore()


def test_a_module_attribute(registry):
    module = types.ModuleType("fake_module")
    module.function = lambda: ["module"]  # type: ignore[attr-defined]
    original = module.function  # type: ignore[attr-defined]
    patches = Patches(registry)
    patches.patch(module, "function", tagged("a"))
    assert module.function() == ["module", "a"]  # type: ignore[attr-defined]
    patches.restore()
    assert module.function is original  # type: ignore[attr-defined]


def test_a_closure_cell(registry):
    value, replacement = object(), object()
    reader = closure_of(value)
    patches = Patches(registry)
    patches.cell(reader.__closure__[0], replacement)
    assert reader() is replacement
    [target] = registry.targets()
    assert target.name is None and target.original is value
    patches.restore()
    assert reader() is value
    assert len(registry) == 0


def test_a_failing_make_records_nothing(registry):
    def make(original: Any) -> Any:
        raise LookupError(original)

    patches = Patches(registry)
    with pytest.raises(LookupError):
        patches.patch(Owner, "own", make)
    assert len(registry) == 0 and not patches
    assert Owner().own() == ["own"]


def test_restore_takes_the_latest_first_within_one_holder(registry):
    original = Owner.__dict__["own"]
    patches = Patches(registry)
    patches.patch(Owner, "own", tagged("a"))
    patches.patch(Owner, "own", tagged("b"))
    assert Owner().own() == ["own", "a", "b"]
    patches.restore()
    assert Owner.__dict__["own"] is original


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_stacked_holders_restore_in_any_order(registry, order):
    """Three holders wrap the same method, a cell and a module function; any order restores."""
    module = types.ModuleType("fake_module")
    module.function = lambda: ["module"]  # type: ignore[attr-defined]
    value = object()
    reader = closure_of(value)
    originals = (Owner.__dict__["own"], module.function, value)  # type: ignore[attr-defined]
    holders = [Patches(registry) for _ in range(3)]
    for number, holder in enumerate(holders):
        holder.patch(Owner, "own", tagged(f"h{number}"))
        holder.patch(module, "function", tagged(f"h{number}"))
        holder.cell(reader.__closure__[0], number)
    assert Owner().own() == ["own", "h0", "h1", "h2"]
    left = [0, 1, 2]
    for number in order:
        holders[number].restore()
        left.remove(number)
        assert not holders[number]
        assert Owner().own() == ["own", *(f"h{n}" for n in left)]
        assert module.function() == ["module", *(f"h{n}" for n in left)]  # type: ignore[attr-defined]
        assert reader() is (left[-1] if left else value)
    assert len(registry) == 0
    current = (Owner.__dict__["own"], module.function, reader())  # type: ignore[attr-defined]
    assert all(now is before for now, before in zip(current, originals, strict=True))


def test_stacked_on_an_inherited_attribute_removes_it_in_any_order(registry):
    for first in (0, 1):
        holders = [Patches(registry), Patches(registry)]
        for number, holder in enumerate(holders):
            holder.patch(Owner, "method", tagged(f"h{number}"))
        holders[first].restore()
        assert Owner().method() == ["base", f"h{1 - first}"]
        holders[1 - first].restore()
        assert "method" not in Owner.__dict__ and len(registry) == 0


def test_a_stacked_classmethod_rebuilt_stays_a_classmethod(registry):
    original = Owner.__dict__["build"]
    inner, outer = Patches(registry), Patches(registry)
    inner.patch(Owner, "build", tagged("inner"))
    outer.patch(Owner, "build", tagged("outer"))
    inner.restore()
    assert isinstance(Owner.__dict__["build"], classmethod)
    assert Owner.build() == ["Owner", "outer"]
    outer.restore()
    assert Owner.__dict__["build"] is original


def test_patch_again_after_restore(registry):
    original = Owner.__dict__["own"]
    patches = Patches(registry)
    for _ in range(3):
        patches.patch(Owner, "own", tagged("a"))
        assert Owner().own() == ["own", "a"]
        patches.restore()
        assert Owner.__dict__["own"] is original
