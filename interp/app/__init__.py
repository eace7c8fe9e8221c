"""The Gradio app: explore, explain, score, intervene and publish one run directory.

A thin shell over the same library functions as the CLI: panels are plain functions
(``explore``, ``pipeline``, ``intervene``, ``publishing``); ``tabs`` builds each tab's Gradio
widgets and wires them to ``handlers``; ``ui`` puts the tabs together. Everything the browser names
is resolved inside one workspace folder (``workspace``).

    python app.py [RUN_DIR]        # or: interp app [RUN_DIR] --workspace DIR --host 0.0.0.0
"""

import os

from .config import AppConfig, config_from_env

__all__ = ["AppConfig", "config_from_env", "launch"]


def launch(config: AppConfig, *, block: bool = True):
    """Build the page for ``config`` and serve it; returns the Gradio ``Blocks`` (already serving
    when ``block`` is False).

    Gradio's own file cache goes inside the workspace unless ``$GRADIO_TEMP_DIR`` says otherwise.
    """
    from .render import CSS
    from .ui import build_app, theme
    from .workspace import Workspace

    workspace = Workspace(config.workspace)
    workspace.resolve(config.run_dir)  # the first run must lie inside the workspace too
    os.environ.setdefault("GRADIO_TEMP_DIR", str(workspace.root / ".gradio"))
    page = build_app(config)
    page.queue(default_concurrency_limit=8)
    page.launch(
        server_name=config.host,
        server_port=config.port,
        prevent_thread_lock=not block,
        show_error=False,
        run_history=False,  # it would keep every call's inputs, the token field's too, in the browser
        footer_links=["api"],
        allowed_paths=[str(workspace.root)],
        css=CSS,
        theme=theme(),
        quiet=not block,
        ssr_mode=False,  # server-side rendering needs Node.js, which a plain Python image (or Space) lacks
    )
    return page
