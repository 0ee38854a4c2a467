"""PortableRegistry names and clashes, and the two kinds of GlobalData."""

from __future__ import annotations

import pytest

from tether.codec import GlobalData, PortableClass, PortableRegistry, portable_registry
from tether.codec.registry import DisabledGlobalData


class Plain:
    pass


class Outer:
    class Inner:
        pass


class Hooks:
    def __serialize__(self, global_data: object) -> object:
        return None

    def __deserialize__(self, data: object, global_data: object) -> None:
        pass

    @staticmethod
    def __new_deserialized__(data: object, global_data: object) -> object:
        return Hooks()


class Problem(Exception):
    pass


def same_qualified_class() -> type:
    """A new class object with the same module and qualified name as Plain (a reload)."""
    clone = type("Plain", (), {})
    clone.__module__ = Plain.__module__
    clone.__qualname__ = Plain.__qualname__
    return clone


def test_default_name_is_module_and_qualified_name() -> None:
    registry = PortableRegistry()
    entry = registry.register(Outer.Inner)
    assert entry.name == "tests.codec.test_registry.Outer.Inner"
    assert registry.by_name[entry.name] is entry
    assert registry.by_class[Outer.Inner] is entry


def test_explicit_names() -> None:
    registry = PortableRegistry()
    entry = registry.register(Plain, "app.Plain")
    assert entry == PortableClass("app.Plain", Plain, False, False, False, False)
    assert list(registry.by_name) == ["app.Plain"]


def test_flags_describe_the_hooks() -> None:
    registry = PortableRegistry()
    hooks = registry.register(Hooks)
    problem = registry.register(Problem)
    assert (hooks.serialize, hooks.deserialize, hooks.new_deserialized) == (True, True, True)
    assert not hooks.is_exception
    assert problem.is_exception
    assert not problem.serialize


def test_registering_the_same_class_again_replaces_it() -> None:
    registry = PortableRegistry()
    first = registry.register(Plain)
    second = registry.register(Plain)
    assert second == first
    assert registry.by_name[first.name] is second
    assert registry.by_class == {Plain: second}


def test_a_reloaded_class_replaces_the_old_one() -> None:
    registry = PortableRegistry()
    registry.register(Plain, "app.Plain")
    clone = same_qualified_class()
    entry = registry.register(clone, "app.Plain")
    assert registry.by_name["app.Plain"] is entry
    assert entry.cls is clone
    assert registry.by_class == {clone: entry}


def test_a_different_class_under_a_taken_name_is_refused() -> None:
    registry = PortableRegistry()
    registry.register(Plain, "app.Thing")
    with pytest.raises(ValueError, match=r"'app.Thing' is already registered"):
        registry.register(Hooks, "app.Thing")
    assert registry.by_name["app.Thing"].cls is Plain
    assert Hooks not in registry.by_class


@pytest.mark.parametrize("name", ["", 5, b"x"], ids=["empty", "int", "bytes"])
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises(ValueError, match="non-empty str"):
        PortableRegistry().register(Plain, name)  # type: ignore[arg-type]


@pytest.mark.parametrize("thing", [Plain(), "Plain", None], ids=["instance", "str", "None"])
def test_only_classes_can_be_registered(thing: object) -> None:
    with pytest.raises(TypeError, match="needs a class"):
        PortableRegistry().register(thing)  # type: ignore[arg-type]


def test_decorator_forms() -> None:
    registry = PortableRegistry()

    @registry.decorator
    class Bare:
        pass

    @registry.decorator()
    class Called:
        pass

    @registry.decorator("app.Named")
    class Named:
        pass

    assert isinstance(Bare, type)
    assert isinstance(Called, type)
    assert isinstance(Named, type)
    assert registry.by_class[Bare].name.endswith("test_decorator_forms.<locals>.Bare")
    assert registry.by_class[Called].name.endswith("test_decorator_forms.<locals>.Called")
    assert registry.by_class[Named].name == "app.Named"


def test_the_process_wide_default_registry() -> None:
    assert isinstance(portable_registry, PortableRegistry)
    assert Plain not in portable_registry.by_class


# -- GlobalData ------------------------------------------------------------------------


def test_a_usable_global_data_is_truthy_even_when_empty() -> None:
    data = GlobalData()
    assert bool(data)
    assert len(data) == 0
    data["a"] = 1
    assert data["a"] == 1
    assert "a" in data
    assert list(data) == ["a"]
    assert data.get("missing", 2) == 2
    del data["a"]
    assert dict(data) == {}
    assert repr(GlobalData({"x": 1})) == "GlobalData({'x': 1})"


def test_global_data_wraps_the_dict_it_is_given() -> None:
    backing: dict[str, object] = {"x": 1}
    data = GlobalData(backing)
    data["y"] = 2
    assert backing == {"x": 1, "y": 2}


def test_global_data_keys_are_strings() -> None:
    with pytest.raises(TypeError, match="keys must be str, got int"):
        GlobalData()[1] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    "touch",
    [
        lambda d: d["x"],
        lambda d: d.__setitem__("x", 1),
        lambda d: d.__delitem__("x"),
        lambda d: list(d),
        lambda d: len(d),
        lambda d: "x" in d,
        lambda d: d.get("x"),
        lambda d: d.setdefault("x", 1),
        lambda d: d.update(x=1),
    ],
    ids=["read", "write", "delete", "iterate", "len", "contains", "get", "setdefault", "update"],
)
def test_disabled_global_data_is_falsey_and_refuses_everything(touch: object) -> None:
    disabled = DisabledGlobalData()
    assert not disabled
    assert isinstance(disabled, GlobalData)
    with pytest.raises(RuntimeError, match="not available to objects stored inside global_data"):
        touch(disabled)  # type: ignore[operator]
