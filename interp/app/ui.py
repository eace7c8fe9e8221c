"""The Gradio Blocks page: Explore | Explain | Score | Intervene | Publish over one run directory.

Each event handler only turns widget values into a call of the panel functions
(``explore``, ``pipeline``, ``intervene``, ``publishing``) and their results into widget
values; expected mistakes become a ``gr.Error`` with the one-line message the CLI would print.
Long work (explaining, scoring, building the default run, publishing) goes through Gradio's
queue one job at a time, with progress read from the library's tqdm bars; browsing stays
served meanwhile.

Where the page's code lives: the panels stay plain functions without Gradio, which the tests
and the CLI call too; every Gradio call is in one of three modules. ``handlers`` has the event
handlers, ``tabs`` has one builder per part of the page (the top bar and each tab) with the
function that wires its events beside it, and this module composes them. Sharing the open runs
between visitors (their locks and caches) is the business of ``session``.
"""

import gradio as gr

from . import tabs
from .config import AppConfig
from .handlers import Handlers

THEME_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
"""System fonts: the default theme would fetch web fonts, which an offline machine or a private Space should not."""


def build_app(config: AppConfig) -> gr.Blocks:
    """The app's page for ``config`` (not launched).

    Every part is laid out before any event is wired, since some events fill later tabs.
    """
    h = Handlers(config)
    with gr.Blocks(title="interp", analytics_enabled=False) as page:
        top = tabs.top_bar(h.workspace, config)
        explore, explain, score = tabs.explore_tab(), tabs.explain_tab(config), tabs.score_tab(config)
        intervene, publish = tabs.intervene_tab(), tabs.publish_tab(config)
        tabs.wire_top_bar(page, h, top, explore, score)
        tabs.wire_explore(h, top, explore)
        tabs.wire_explain(h, top, explain, score)
        tabs.wire_score(h, top, score)
        tabs.wire_intervene(h, top, intervene)
        tabs.wire_publish(h, top, publish)
    return page


def theme() -> gr.themes.Base:
    """Gradio's default theme with system fonts only."""
    return gr.themes.Default(**THEME_FONTS)
