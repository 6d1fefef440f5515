"""Name → class registry of the task-balancing strategies (importing `hf_async_mtl.weighting` fills it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from .base import WeightingMethod

_REGISTRY: dict[str, type[WeightingMethod]] = {}

_M = TypeVar("_M", bound=type[WeightingMethod])


def register_weighting(cls: _M) -> _M:
    """Class decorator adding a `WeightingMethod` subclass under its `name` class attribute.

    Raises:
        TypeError: `cls` is not a `WeightingMethod` subclass.
        ValueError: `cls` has no non-empty string `name`, or another class already holds that name.
            Registering the very same class twice is a no-op (so re-importing a module is harmless), and a class
            defined again in `__main__` (a notebook cell run twice) replaces its earlier definition.
    """
    if not (isinstance(cls, type) and issubclass(cls, WeightingMethod)):
        raise TypeError(f"register_weighting expects a WeightingMethod subclass, got {cls!r}.")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__qualname__} must define a non-empty string class attribute `name` to be registered.")
    existing = _REGISTRY.get(name)
    same_place = existing is not None and (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__)
    redefined = same_place and cls.__module__ == "__main__"
    if existing is not None and existing is not cls and not redefined:
        raise ValueError(
            f"Weighting name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}; "
            f"cannot register {cls.__module__}.{cls.__qualname__} under the same name."
        )
    _REGISTRY[name] = cls
    return cls


def available_weightings() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def get_weighting(name: str) -> type[WeightingMethod]:
    """The class registered as `name`; an unknown name raises `ValueError` listing the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown weighting method {name!r}; known methods: {', '.join(available_weightings())}.") from None


def build_weighting(name: str, task_names: Sequence[str], **options: Any) -> WeightingMethod:
    """Instantiate the method registered as `name` for `task_names` with the given options."""
    return get_weighting(name)(task_names, **options)
