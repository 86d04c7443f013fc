"""Config dataclasses drive the command-line flags, so every default lives once (in the dataclass).

Each field becomes `--field-name` (bools `--field/--no-field`), its help is the docstring written
under the field (the nerfstudio/tyro habit) plus the default; `Literal[...]` fields get choices.
Flags the user did not give are left out of the parsed arguments, so `config_from_args` builds
the dataclass from the given values and the dataclass supplies the rest.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import lru_cache


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """{field: the string literal that follows its annotation in the class body}."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _flag(name: str, prefix: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def _dest(name: str, prefix: str) -> str:
    return f"cfg__{prefix}{name}"


def _scalar(tp) -> tuple[type | None, tuple | None, bool]:
    """(python type, choices, optional) for a field's annotation; (None, ...) if unsupported."""
    origin = typing.get_origin(tp)
    optional = False
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            return None, None, optional
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return type(choices[0]), choices, optional
    if tp in (int, float, str, bool):
        return tp, None, optional
    return None, None, optional


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                         skip: tuple[str, ...] = (), renames: dict[str, str] | None = None,
                         group_title: str | None = None) -> None:
    """Add a flag per field of the dataclass `cls` (see the module docstring).

    `skip` leaves fields out (those set by other means), `renames` maps a field to the flag a
    command has always used (e.g. {"distortion_model": "--distortion"}).
    """
    renames = renames or {}
    target = parser.add_argument_group(group_title) if group_title else parser
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init or f.name.startswith("_"):
            continue
        tp, choices, optional = _scalar(hints[f.name])
        if tp is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        doc = docs.get(f.name, f.name.replace("_", " "))
        help_text = f"{doc} (default: {default})".replace("%", "%%")
        flag = renames.get(f.name, _flag(f.name, prefix))
        kwargs: dict = {"dest": _dest(f.name, prefix), "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            target.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        kwargs["type"] = _optional(tp) if optional else tp
        if choices:
            kwargs["choices"] = choices
        kwargs["metavar"] = None if choices else {int: "N", float: "X"}.get(tp, "TEXT")
        target.add_argument(flag, **kwargs)


def _optional(tp):
    def parse(text: str):
        return None if text.lower() in ("none", "") else tp(text)

    parse.__name__ = tp.__name__
    return parse


def given_fields(args: argparse.Namespace, cls: type, prefix: str = "") -> dict:
    """The fields of `cls` that the user set on the command line."""
    values = {}
    for f in dataclasses.fields(cls):
        dest = _dest(f.name, prefix)
        if hasattr(args, dest):
            values[f.name] = getattr(args, dest)
    return values


def config_from_args(cls: type, args: argparse.Namespace, prefix: str = "", **overrides):
    """Build `cls` from the given flags; `overrides` win over flags, the dataclass supplies the rest."""
    values = given_fields(args, cls, prefix)
    values.update(overrides)
    return cls(**values)
