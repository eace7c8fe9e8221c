"""Prompt templates as data: one text file per explainer or scorer part, filled with ``string.Template``."""

from functools import cache
from importlib.resources import files
from string import Template


@cache
def template(name: str) -> Template:
    """The template ``interp/prompts/<name>.txt``."""
    return Template(files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8"))


def render(name: str, **values: str) -> str:
    """Fill template ``name``; a missing value is an error, not a blank."""
    return template(name).substitute(**values).strip()
