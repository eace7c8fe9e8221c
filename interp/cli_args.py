"""argparse flags generated from the config dataclasses: one field, one flag, its docstring as help."""

import argparse
import typing
from dataclasses import MISSING, fields, replace

from simple_parsing.docstring import get_attribute_docstring

from .config import choices


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_args(
    parser: argparse.ArgumentParser, cls, group_title: str | None = None, *, given_only: bool = False
) -> None:
    """Add one flag per field of dataclass ``cls`` to ``parser``; defaults come from the class.

    With ``given_only`` a flag left out sets nothing (``with_args`` then keeps the value it
    had): a stage on an existing run takes the run's own settings, not the defaults.
    """
    group = parser.add_argument_group(group_title or cls.__name__, (cls.__doc__ or "").strip())
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        doc = get_attribute_docstring(cls, f.name).docstring_below or ""
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        hint = hints[f.name]
        args = typing.get_args(hint)
        kwargs: dict = {
            "dest": f.name,
            "default": argparse.SUPPRESS if given_only else default,
            "help": f"{doc} (default: {default})",
        }
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif choices(hint):
            kwargs["choices"] = choices(hint)
            if typing.get_origin(hint) is list:  # one metavar, the choices once in the help
                kwargs.update(nargs="+", metavar=f.name.upper().removesuffix("S"))
                kwargs["help"] = f"{doc} One or more of: {', '.join(choices(hint))} (default: {' '.join(default)})"
        elif typing.get_origin(hint) is list:
            kwargs.update(nargs="+", type=args[0])
        else:
            base = next((a for a in args if a is not type(None)), hint) if args else hint
            kwargs["type"] = base
        group.add_argument(_flag(f.name), **kwargs)


def with_args(base, ns: argparse.Namespace):
    """``base`` (a config dataclass of sections, such as ``RunConfig``) with every flag given in ``ns`` set over it."""
    sections = {}
    for section in fields(base):
        current = getattr(base, section.name)
        given = {f.name: getattr(ns, f.name) for f in fields(current) if hasattr(ns, f.name)}
        sections[section.name] = replace(current, **given)
    return replace(base, **sections)
