"""The parts of the page: the top bar and the five tabs, each a builder and the function that wires its events.

A builder (``explore_tab``, ...) lays out its part and returns the widgets its events use as a
NamedTuple; the part's ``wire_*`` function, just below it, connects those widgets to
``Handlers``. ``ui.build_app`` lays out every part before it wires any, because some events
reach into a later tab: opening a run fills the Explore and Score tabs, and explaining updates
the Score tab's explainer choice.
"""

from typing import NamedTuple

import gradio as gr
import pandas as pd

from ..config import ExplainConfig
from ..explain import EXPLAINERS
from ..scoring.classify import MODES as SCORE_MODES
from ..scoring.registry import SCORERS
from ..steer import MODES as STEER_MODES
from . import explain_score, explore, intervene, publishing
from .config import AppConfig
from .handlers import Handlers, show_errors
from .workspace import Workspace

PIPELINE = "pipeline"
"""Concurrency group of the jobs that write to run directories and load their own models: one at a time."""
MODEL = "model"
"""Concurrency group of the forward passes on a run's shared model."""


def _empty(headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=headers)


def _llm_widgets(prefix: str, config: AppConfig) -> list:
    """The LLM choice (backend, local model, server URL and model), with element ids starting with ``prefix``."""
    with gr.Accordion("LLM", open=False, elem_id=f"{prefix}-llm"):
        backend = gr.Radio(
            list(explain_score.BACKENDS),
            value="local",
            label="Backend",
            elem_id=f"{prefix}-backend",
            info="local: run a model in this process; url: an OpenAI-compatible server"
            + (
                " (key from $OPENAI_API_KEY)"
                if config.env_token
                else " (the owner's key goes only to their own server)"
            ),
        )
        with gr.Row():
            local_model = gr.Textbox(
                label="Local model",
                elem_id=f"{prefix}-local-model",
                placeholder="empty: the embedded SmolLM2; or a Hub id / a folder in the workspace",
            )
            url = gr.Textbox(
                value=config.llm_url,
                label="Server URL",
                placeholder="http://127.0.0.1:8000/v1",
                elem_id=f"{prefix}-url",
            )
            server_model = gr.Textbox(
                label="Server model", placeholder="Qwen/Qwen2.5-7B-Instruct", elem_id=f"{prefix}-server-model"
            )
    return [backend, local_model, url, server_model]


class TopBar(NamedTuple):
    """Above the tabs: the run, coder and latent every tab works on, and the run's status."""

    run: gr.Dropdown
    coder: gr.Dropdown
    latent: gr.Number
    open: gr.Button
    status: gr.Markdown
    build: gr.Button
    """Builds the default run; shown only when it cannot be opened."""


def top_bar(workspace: Workspace, config: AppConfig) -> TopBar:
    """The title, the run picker and the run's status line."""
    gr.Markdown("# interp — automated interpretability of sparse latents")
    with gr.Row(equal_height=True):
        run = gr.Dropdown(
            choices=workspace.runs(),
            value=config.run_dir,
            allow_custom_value=True,
            scale=3,
            label="Run directory",
            info=f"inside the workspace {workspace.root}",
            elem_id="run",
        )
        coder = gr.Dropdown(choices=[], label="Coder", allow_custom_value=True, scale=3, elem_id="coder")
        latent = gr.Number(value=0, precision=0, minimum=0, label="Latent", scale=1, elem_id="latent")
        open_ = gr.Button("Open", scale=1, elem_id="open")
    status = gr.Markdown(elem_id="status")
    build = gr.Button(
        f"Build the default run into {config.run_dir} (about 6 minutes on 2 CPUs)",
        size="sm",
        visible=False,
        elem_id="build",
    )
    return TopBar(run, coder, latent, open_, status, build)


def wire_top_bar(page: gr.Blocks, h: Handlers, top: TopBar, explore_: "ExploreTab", score: "ScoreTab"):
    """Open the run on page load and on the Open button, and build the default run on its button."""
    # in Handlers.open_run's order
    opened = [
        top.status,
        top.coder,
        top.latent,
        explore_.sort,
        explore_.table,
        score.explainer,
        score.outcome_scorer,
        explore_.page_line,
        explore_.page,
    ]
    show_latent_after(h, top, explore_, page.load(h.start, [top.run], [*opened, top.build], api_visibility="private"))
    show_latent_after(
        h, top, explore_, top.open.click(show_errors(h.open_run), [top.run], opened, api_name="open_run")
    )
    top.build.click(h.build, None, [top.run], api_name="build").then(
        h.start, [top.run], [*opened, top.build], api_visibility="private"
    )


class ExploreTab(NamedTuple):
    """The latent table, one latent's view, and "test my text"."""

    query: gr.Textbox
    sort: gr.Dropdown
    search: gr.Button
    table: gr.Dataframe
    """One page of the latent table (``explore.PAGE_SIZE`` rows)."""
    page: gr.Number
    previous: gr.Button
    next: gr.Button
    page_line: gr.Markdown
    """"page X of N (M latents)"."""
    shown: gr.State
    """Where the page ``Handlers.latents`` sent stands, for ``page_line`` and ``page``."""
    show: gr.Button
    view: list
    """What ``Handlers.show_latent`` fills: stats, histogram, explanations, scores, top and quantile
    examples, promoted and suppressed tokens.
    """
    candidates: gr.Dataframe
    """The latent's search candidates (``Handlers.candidates``); hidden when none of its explanations was searched."""
    text: gr.Textbox
    test: gr.Button
    fired: list
    """What ``Handlers.test_text`` fills: the highlighted text and the latents firing on it."""


def explore_tab() -> ExploreTab:
    """Browse the explained latents, open one, and see which latents fire on a text."""
    with gr.Tab("Explore", elem_id="tab-explore"):
        with gr.Row():
            query = gr.Textbox(label="Search explanations", placeholder="a word or phrase", scale=3, elem_id="query")
            sort = gr.Dropdown(
                choices=list(explore.SORTS),
                value="latent",
                label="Sort by",
                allow_custom_value=True,
                scale=2,
                elem_id="sort",
            )
            search = gr.Button("Search", scale=1, elem_id="search")
        table = gr.Dataframe(
            value=_empty(explore.LATENT_HEADERS),
            label="Explained latents (click a row to open it)",
            interactive=False,
            wrap=True,
            max_height=320,
            elem_id="latents",
        )
        with gr.Row(equal_height=True):
            previous = gr.Button("◀ Previous", size="sm", scale=1, elem_id="previous-page")
            page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1, elem_id="page")
            next_ = gr.Button("Next ▶", size="sm", scale=1, elem_id="next-page")
            page_line = gr.Markdown(elem_id="page-line")
        shown = gr.State()
        show = gr.Button("Show latent", variant="primary", elem_id="show")
        stats = gr.Markdown(elem_id="stats")
        with gr.Row():
            hist = gr.Plot(label="Activation histogram", elem_id="histogram", scale=2)
            expl_table = gr.Dataframe(
                value=_empty(explore.EXPLANATION_HEADERS),
                label="Explanations",
                interactive=False,
                wrap=True,
                elem_id="explanations",
                scale=3,
            )
        score_table = gr.Dataframe(
            value=_empty(explore.SCORE_HEADERS),
            label="Scores: the explanation against a random one",
            interactive=False,
            wrap=True,
            elem_id="scores",
        )
        candidates = gr.Dataframe(
            value=_empty(explore.CANDIDATE_HEADERS),
            label="Search candidates: each scored by the judge on the validation split, the best kept",
            interactive=False,
            wrap=True,
            visible=False,
            elem_id="candidates",
        )
        gr.Markdown("### Top examples (hover a token for its activation)")
        top_html = gr.HTML(elem_id="top")
        gr.Markdown("### Held-out examples by activation quantile")
        quant_html = gr.HTML(elem_id="quantiles")
        with gr.Row():
            promoted = gr.Dataframe(
                value=_empty(explore.TOKEN_HEADERS), label="Promoted tokens", interactive=False, elem_id="promoted"
            )
            suppressed = gr.Dataframe(
                value=_empty(explore.TOKEN_HEADERS), label="Suppressed tokens", interactive=False, elem_id="suppressed"
            )
        with gr.Accordion("Test my text: which latents fire on it?", open=True):
            text = gr.Textbox(label="Your text", lines=2, elem_id="my-text")
            test = gr.Button("Which latents fire?", elem_id="test-text")
            text_html = gr.HTML(elem_id="text-highlight")
            text_table = gr.Dataframe(
                value=_empty(explore.TEXT_HEADERS),
                label="Latents firing on the text",
                interactive=False,
                wrap=True,
                elem_id="text-latents",
            )
    view = [stats, hist, expl_table, score_table, top_html, quant_html, promoted, suppressed]
    return ExploreTab(
        query,
        sort,
        search,
        table,
        page,
        previous,
        next_,
        page_line,
        shown,
        show,
        view,
        candidates,
        text,
        test,
        [text_html, text_table],
    )


def candidates_after(h: Handlers, top: TopBar, tab: ExploreTab, event) -> None:
    """After ``event`` has shown a latent: its search candidates, in an event of their own, so that ``/latent``
    answers what it always has."""
    event.then(h.candidates, [top.run, top.coder, top.latent], [tab.candidates], api_visibility="private")


def show_latent_after(h: Handlers, top: TopBar, tab: ExploreTab, event) -> None:
    """After ``event``: the chosen latent's view, then its candidates."""
    shown = event.then(h.show_latent, [top.run, top.coder, top.latent], tab.view, api_visibility="private")
    candidates_after(h, top, tab, shown)


def wire_explore(h: Handlers, top: TopBar, tab: ExploreTab):
    """Search and sort the table (from its first page) and turn its pages, open a latent from it or the top bar, and
    test a text."""
    search = [top.run, top.coder, tab.query, tab.sort]
    paged = [*search, tab.page]
    table = [tab.table, tab.shown]
    # (trigger, handler, inputs, API name): the page number is the API's, so that it can ask for any page
    for trigger, fn, inputs, api in (
        (tab.page.submit, h.latents, paged, "latents"),
        (tab.search.click, h.latents, search, None),
        (tab.query.submit, h.latents, search, None),
        (tab.sort.input, h.latents, search, None),
        (top.coder.input, h.latents, search, None),
        (tab.previous.click, h.previous_page, paged, None),
        (tab.next.click, h.next_page, paged, None),
    ):
        named = {"api_name": api} if api else {"api_visibility": "private"}
        trigger(fn, inputs, table, **named).then(
            h.show_page, [tab.shown], [tab.page_line, tab.page], api_visibility="private"
        )
    show_latent_after(h, top, tab, tab.table.select(h.pick, None, [top.latent], api_visibility="private"))
    chosen = [top.run, top.coder, top.latent]
    candidates_after(h, top, tab, tab.show.click(h.show_latent, chosen, tab.view, api_name="latent"))
    candidates_after(h, top, tab, top.latent.submit(h.show_latent, chosen, tab.view, api_visibility="private"))
    tab.test.click(
        h.test_text,
        [top.run, top.coder, tab.text, top.latent],
        tab.fired,
        api_name="test_text",
        concurrency_id=MODEL,
        concurrency_limit=1,
    )


class ExplainTab(NamedTuple):
    """The explainer and LLM settings, the Explain button and its results."""

    settings: list
    """Explainer, which latents, selection, the LLM choice, the search settings and whether to explain again, in
    ``Handlers.explain``'s order."""
    button: gr.Button
    status: gr.Markdown
    table: gr.Dataframe


def _search_widgets() -> list:
    """The explanation search (``interp explain --search``), in ``Handlers.explain``'s order, and "explain again"."""
    defaults = explain_score.SearchChoice()
    with gr.Accordion(
        "Search: several candidates, the best on the validation split", open=False, elem_id="explain-search"
    ):
        with gr.Row():
            search = gr.Radio(
                list(explain_score.SEARCHES),
                value=defaults.search,
                label="Search",
                elem_id="search-mode",
                info="best-of-k: candidates from the explainer, the judge keeps the best; refine: then rounds that "
                "show the explainer what the judge got wrong. The test split is never shown nor used to choose",
            )
            judge = gr.Dropdown(
                list(SCORERS),
                value=defaults.judge,
                label="Judge",
                elem_id="search-judge",
                info="the scorer that chooses, on validation examples alone; embedding is cheap on a CPU",
            )
        with gr.Row():
            candidates = gr.Slider(
                1,
                explain_score.MAX_CANDIDATES,
                value=defaults.candidates,
                step=1,
                label="Candidates per round",
                info="the first greedy, the others sampled",
                elem_id="search-candidates",
            )
            rounds = gr.Slider(
                0,
                explain_score.MAX_ROUNDS,
                value=defaults.rounds,
                step=1,
                label="Refinement rounds (refine)",
                elem_id="search-rounds",
            )
            temperature = gr.Slider(
                0,
                2,
                value=defaults.temperature,
                step=0.05,
                label="Temperature of the sampled candidates",
                elem_id="search-temperature",
            )
        with gr.Row():
            tokens_candidate = gr.Checkbox(
                value=defaults.tokens_candidate,
                label="Add the firing-token list (the tokens explainer's) as a candidate",
                elem_id="search-tokens-candidate",
            )
            redo = gr.Checkbox(
                value=False,
                label="Explain again",
                info="latents this explainer has explained already are redone (their scores too), not skipped",
                elem_id="redo",
            )
    return [search, candidates, rounds, judge, temperature, tokens_candidate, redo]


def explain_tab(config: AppConfig) -> ExplainTab:
    """Explain the chosen latent or a selection with one explainer and LLM, searching or not."""
    with gr.Tab("Explain", elem_id="tab-explain"):
        with gr.Row():
            explainer = gr.Dropdown(
                list(EXPLAINERS),
                value=ExplainConfig().explainer,
                label="Explainer",
                elem_id="explainer",
                info="short suits small LLMs (the embedded one); tokens needs no LLM; intervention steers the latent",
            )
            which = gr.Radio(["this latent", "a selection"], value="this latent", label="Explain", elem_id="which")
            selection = gr.Textbox(
                value="sample:8", label="Selection", info="all, sample:N, A-B or A,B,C", elem_id="selection"
            )
        llm = _llm_widgets("explain", config)
        search = _search_widgets()
        button = gr.Button("Explain", variant="primary", elem_id="explain")
        status = gr.Markdown(elem_id="explain-status")
        table = gr.Dataframe(
            value=_empty(explain_score.EXPLAINED_HEADERS),
            label="Explanations",
            interactive=False,
            wrap=True,
            elem_id="explained",
        )
    return ExplainTab([explainer, which, selection, *llm, *search], button, status, table)


def wire_explain(h: Handlers, top: TopBar, tab: ExplainTab, score: "ScoreTab"):
    """Explain, then offer the new explanations in the Score tab and update the run's status."""
    tab.button.click(
        h.explain,
        [top.run, top.coder, top.latent, *tab.settings],
        [tab.status, tab.table, score.explainer],
        api_name="explain",
        concurrency_id=PIPELINE,
        concurrency_limit=1,
    ).then(h.refresh, [top.run], [top.status], api_visibility="private")


class ScoreTab(NamedTuple):
    """The scoring settings and summary, and one latent's per-example outcomes."""

    explainer: gr.Dropdown
    """Whose explanations are scored and shown."""
    settings: list
    """Scorers, answer mode and the LLM choice, in ``Handlers.score``'s order."""
    button: gr.Button
    results: list
    """What ``Handlers.score`` fills: the summary, its plots and the outcome scorer choice."""
    outcome_scorer: gr.Dropdown
    outcomes: gr.Button
    outcome_results: list
    """What ``Handlers.outcomes`` fills: the metrics line and the per-example table."""


def score_tab(config: AppConfig) -> ScoreTab:
    """Score one explainer's explanations and inspect a latent's per-example outcomes."""
    with gr.Tab("Score", elem_id="tab-score"):
        with gr.Row():
            explainer = gr.Dropdown(
                choices=[], label="Explanations of", allow_custom_value=True, elem_id="score-explainer"
            )
            scorers = gr.CheckboxGroup(list(SCORERS), value=["embedding"], label="Scorers", elem_id="scorers")
            mode = gr.Radio(list(SCORE_MODES), value="logprob", label="LLM scorers answer by", elem_id="score-mode")
        llm = _llm_widgets("score", config)
        button = gr.Button("Score", variant="primary", elem_id="score")
        summary = gr.Dataframe(
            value=_empty(explain_score.SUMMARY_HEADERS),
            label="Summary (mean over latents)",
            interactive=False,
            elem_id="summary",
        )
        gallery = gr.Gallery(label="Summary plots", columns=3, height="auto", object_fit="contain", elem_id="plots")
        gr.Markdown("### Per-example outcomes of the chosen latent")
        with gr.Row():
            outcome_scorer = gr.Dropdown(choices=[], label="Scorer", allow_custom_value=True, elem_id="outcome-scorer")
            outcomes = gr.Button("Show outcomes", elem_id="outcomes")
        outcome_md = gr.Markdown(elem_id="outcome-metrics")
        outcome_table = gr.Dataframe(
            value=_empty(explain_score.OUTCOME_HEADERS),
            label="Each held-out example: did the scorer get it right?",
            interactive=False,
            wrap=True,
            elem_id="outcome-table",
        )
    return ScoreTab(
        explainer,
        [scorers, mode, *llm],
        button,
        [summary, gallery, outcome_scorer],
        outcome_scorer,
        outcomes,
        [outcome_md, outcome_table],
    )


def wire_score(h: Handlers, top: TopBar, tab: ScoreTab):
    """Score, then update the run's status; show the chosen latent's outcomes."""
    tab.button.click(
        h.score,
        [top.run, top.coder, tab.explainer, *tab.settings],
        tab.results,
        api_name="score",
        concurrency_id=PIPELINE,
        concurrency_limit=1,
    ).then(h.refresh, [top.run], [top.status], api_visibility="private")
    tab.outcomes.click(
        h.outcomes,
        [top.run, top.coder, top.latent, tab.outcome_scorer, tab.explainer],
        tab.outcome_results,
        api_name="outcomes",
    )


class InterveneTab(NamedTuple):
    """The steering settings, the Steer button and the two continuations."""

    settings: list
    """Prompt, mode, strength or target KL, its value and the new tokens, in ``Handlers.steer``'s order."""
    button: gr.Button
    results: list
    """What ``Handlers.steer`` fills: the summary, both continuations and the next-token changes."""


def intervene_tab() -> InterveneTab:
    """Continue a prompt with and without the chosen latent steered."""
    with gr.Tab("Intervene", elem_id="tab-intervene"):
        prompt = gr.Textbox(value="My favourite animal is", label="Prompt", elem_id="prompt")
        with gr.Row():
            mode = gr.Radio(list(STEER_MODES), value="add", label="Mode", elem_id="steer-mode")
            how = gr.Radio(["strength", "target KL"], value="target KL", label="Set", elem_id="how")
            value = gr.Number(value=1.0, label="Strength / target KL (nats)", elem_id="value")
            max_new = gr.Slider(1, intervene.MAX_NEW_TOKENS, value=24, step=1, label="New tokens", elem_id="max-new")
        button = gr.Button("Steer", variant="primary", elem_id="steer")
        summary = gr.Markdown(elem_id="steer-summary")
        with gr.Row():
            clean = gr.Textbox(label="Clean continuation", lines=4, elem_id="clean")
            steered = gr.Textbox(label="Steered continuation", lines=4, elem_id="steered")
        changes = gr.Dataframe(
            value=_empty(intervene.CHANGE_HEADERS),
            label="Next tokens made most likely",
            interactive=False,
            elem_id="changes",
        )
    return InterveneTab([prompt, mode, how, value, max_new], button, [summary, clean, steered, changes])


def wire_intervene(h: Handlers, top: TopBar, tab: InterveneTab):
    """Steer the chosen latent on the prompt."""
    tab.button.click(
        h.steer,
        [top.run, top.coder, top.latent, *tab.settings],
        tab.results,
        api_name="steer",
        concurrency_id=MODEL,
        concurrency_limit=1,
    )


class PublishTab(NamedTuple):
    """The dataset preview and the push to the Hub."""

    preview: gr.Button
    previewed: list
    """What ``Handlers.preview`` fills: the first rows and the dataset card."""
    repo: gr.Textbox
    token: gr.Textbox
    """Emptied after each push."""
    private: gr.Checkbox
    publish: gr.Button
    result: gr.Markdown


def publish_tab(config: AppConfig) -> PublishTab:
    """Preview the dataset the run becomes and publish it to a Hub dataset repository."""
    token_info = (
        "used for this push only, never stored; leave empty to use $HF_TOKEN"
        if config.env_token
        else "used for this push only, never stored"
    )
    with gr.Tab("Publish", elem_id="tab-publish"):
        preview = gr.Button("Preview the dataset", elem_id="preview")
        preview_table = gr.Dataframe(
            value=_empty(publishing.PREVIEW_HEADERS),
            label="First rows (one per explained latent)",
            interactive=False,
            wrap=True,
            elem_id="preview-rows",
        )
        card = gr.Code(
            label="Dataset card (README.md)", language="markdown", interactive=False, max_lines=30, elem_id="card"
        )
        with gr.Row():
            repo = gr.Textbox(label="Dataset repository", placeholder="owner/name", elem_id="repo")
            token = gr.Textbox(label="Hugging Face write token", type="password", info=token_info, elem_id="token")
            private = gr.Checkbox(label="Private", elem_id="private")
        publish = gr.Button("Publish", variant="primary", elem_id="publish")
        result = gr.Markdown(elem_id="publish-result")
    return PublishTab(preview, [preview_table, card], repo, token, private, publish, result)


def wire_publish(h: Handlers, top: TopBar, tab: PublishTab):
    """Preview the dataset, and publish it with the typed token, which is then cleared."""
    tab.preview.click(
        h.preview, [top.run], tab.previewed, api_name="preview", concurrency_id=MODEL, concurrency_limit=1
    )
    tab.publish.click(
        h.publish,
        [top.run, tab.repo, tab.token, tab.private],
        [tab.result, tab.token],
        api_name="publish",
        concurrency_id=PIPELINE,
        concurrency_limit=1,
    )
