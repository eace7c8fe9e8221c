"""What the app serves and where: read from the environment (a Space), overridden by the command line.

Environment variables, each the upper-case field name with ``INTERP_`` in front
(``INTERP_WORKSPACE``, ``INTERP_RUN_DIR``, ...). The host and port also fall back to Gradio's
own ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``, which Hugging Face Spaces set.
"""

import argparse
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ..cli_args import add_config_args, with_args
from ..config import SECTIONS, RunConfig, check_config
from ..errors import InterpError

ENV_PREFIX = "INTERP_"
DEFAULT_RUN = "runs/demo"


@dataclass
class AppConfig:
    """How the Gradio app is served."""

    workspace: str = "."
    """Folder the app reads and writes in; no path typed into the app may leave it."""

    run_dir: str = DEFAULT_RUN
    """Run directory opened first, relative to the workspace."""

    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 inside a container or a Space)."""

    port: int = 7860
    """Port to listen on."""

    build_demo: bool = False
    """Build the default run (the embedded model, about 6 minutes on 2 CPUs) when the first run
    directory is missing; on by default in a Space.
    """

    env_token: bool = True
    """Use the owner's secrets from the environment: publish with $HF_TOKEN (or the huggingface_hub
    login) when no token is typed, and send $OPENAI_API_KEY to any LLM server URL typed in. Off
    by default in a Space, where every visitor would publish with the owner's token or collect
    the owner's key with a server of their own.
    """

    llm_url: str = ""
    """An OpenAI-compatible server the owner trusts with $OPENAI_API_KEY even when ``env_token`` is
    off (a Space's own vLLM endpoint); the Server URL box starts with it.
    """

    demo_args: str = ""
    """`interp run` flags for the default run that build_demo builds, set over its defaults (e.g.
    '--num-tokens 20000 --latents sample:4' for a quicker first start); empty: the defaults.
    """

    def __post_init__(self):
        if not 0 < int(self.port) < 65536:
            raise InterpError(f"Port {self.port} is not a TCP port (1-65535).")
        self.demo_config()  # a mistyped flag stops the app at its start, not at the first visit

    def demo_config(self) -> RunConfig:
        """The configuration of the default run: ``RunConfig()`` with ``demo_args`` set over it, as
        ``interp run`` sets its flags.

        >>> AppConfig(demo_args="--num-tokens 4096 --latents sample:2").demo_config().corpus.num_tokens
        4096
        """
        parser = _Flags(prog="demo_args", add_help=False, allow_abbrev=False)
        for section in SECTIONS.values():
            add_config_args(parser, section, given_only=True)
        try:
            words = shlex.split(self.demo_args)
        except ValueError as e:
            raise InterpError(
                f"demo_args ($INTERP_DEMO_ARGS): cannot split {self.demo_args!r} into flags: {e}."
            ) from None
        ns, unknown = parser.parse_known_args(words)
        if unknown:
            raise InterpError(f"demo_args ($INTERP_DEMO_ARGS): {' '.join(unknown)!r} is not an `interp run` setting.")
        cfg = with_args(RunConfig(), ns)
        try:
            check_config(cfg)
        except InterpError as e:
            raise InterpError(f"demo_args ($INTERP_DEMO_ARGS): {e}") from None
        return cfg


class _Flags(argparse.ArgumentParser):
    """The ``interp run`` settings' flags, raising ``InterpError`` where argparse would exit."""

    def error(self, message):
        raise InterpError(f"demo_args ($INTERP_DEMO_ARGS): {message}.")


def _parse(text: str, kind: type):
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise InterpError(f"Cannot read {text!r} as yes or no: use 1/0, true/false, yes/no or on/off.")
        return lowered in ("1", "true", "yes", "on")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise InterpError(f"Cannot read {text!r} as a whole number.") from None
    return text


def config_from_env(environ: Mapping[str, str] | None = None) -> AppConfig:
    """An ``AppConfig`` from ``INTERP_*`` variables (and Gradio's host/port ones), defaults elsewhere.

    >>> config_from_env({"INTERP_WORKSPACE": "/data", "SPACE_ID": "me/interp"}).build_demo
    True
    """
    env = os.environ if environ is None else environ
    on_space = bool(env.get("SPACE_ID"))
    values: dict = {"build_demo": on_space, "env_token": not on_space}
    fallback = {"host": "GRADIO_SERVER_NAME", "port": "GRADIO_SERVER_PORT"}
    for f in fields(AppConfig):
        name = ENV_PREFIX + f.name.upper()
        text = env.get(name) or env.get(fallback.get(f.name, ""))
        if text:
            kind = type(f.default)
            try:
                values[f.name] = _parse(text, kind)
            except InterpError as e:
                raise InterpError(f"${name}: {e}") from None
    return AppConfig(**values)
