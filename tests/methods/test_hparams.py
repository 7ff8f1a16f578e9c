"""The hyperparameter contract: one declaration of allowed values, one validation in the base class, one message."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap

import pytest

from methods.base import METHODS, MethodConfigError


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("delta", {"alpha": -1}, "method 'delta': alpha=-1.0 not in [0, inf)"),
        ("l2sp", {"beta": -0.5}, "method 'l2sp': beta=-0.5 not in [0, inf)"),
        ("lwf", {"temperature": 0}, "method 'lwf': temperature=0.0 not in (0, inf)"),
        ("lwf", {"warmup_fraction": "1.5"}, "method 'lwf': warmup_fraction=1.5 not in [0, 1]"),
        ("lwf", {"lambda": float("nan")}, "method 'lwf': lambda=nan not in [0, inf)"),
        ("bss", {"k": 0}, "method 'bss': k=0 not in [1, inf)"),
        ("bss", {"eta": -1e-3}, "method 'bss': eta=-0.001 not in [0, inf)"),
        ("lp-ft", {"probe_l2": -1}, "method 'lp-ft': probe_l2=-1.0 not in [0, inf)"),
        ("trm", {"stride": 0}, "method 'trm': stride=0 not in [1, inf)"),
        ("freeze", {"scope": "head"}, "method 'freeze': scope='head' not in ['encoder', 'encoder+decoder']"),
    ],
)
def test_one_validation_with_one_message(name: str, params: dict, message: str) -> None:
    with pytest.raises(MethodConfigError) as info:
        METHODS.get(name)(**params)
    assert str(info.value) == message


def test_bounds_are_inclusive_unless_open() -> None:
    assert METHODS.get("lwf")(warmup_fraction=0, temperature=1e-9)
    assert METHODS.get("lwf")(warmup_fraction=1)
    assert METHODS.get("bss")(k=1, eta=0)


@pytest.mark.parametrize("name", METHODS.names())
def test_no_method_checks_its_values_by_hand(name: str) -> None:
    """Ranges and choices are declared on HParam; a method's own ``__init__`` neither raises nor calls ``require``."""
    init = vars(METHODS.get(name)).get("__init__")
    tree = ast.parse(textwrap.dedent(inspect.getsource(init))) if init else ast.Module(body=[], type_ignores=[])
    raises = [n for n in ast.walk(tree) if isinstance(n, ast.Raise)]
    requires = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "require"]
    assert not raises and not requires, f"{name}: declare the allowed values on HParam (low=, high=, choices=)"


@pytest.mark.parametrize("name", METHODS.names())
def test_choices_are_declared_once(name: str) -> None:
    """A choice search space equal to the declared choices is derived, never written out beside them."""
    cls = METHODS.get(name)
    explicit = inspect.getsource(cls).count('Space("choice"')
    narrower = [k for k, s in cls.hparams.items() if s.choices is not None and s.space.choices != tuple(s.choices)]
    assert explicit == len(narrower), f"{name}: a choice space equal to its choices is derived from choices="


@pytest.mark.parametrize("name", METHODS.names())
def test_method_names_come_from_the_registry(name: str) -> None:
    """Messages use ``self.name``: the class never spells its own registered name."""
    source = inspect.getsource(inspect.getmodule(METHODS.get(name)))
    source = source.replace(f'register_method("{name}")', "")
    assert not re.search(rf"method '{re.escape(name)}'|\b{re.escape(name)}\.\w+=", source), name
