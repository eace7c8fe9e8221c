"""The Gradio Blocks page: Explore | Explain | Score | Intervene | Publish over one run directory.

Each event handler only turns widget values into a call of the panel functions
(``explore``, ``pipeline``, ``intervene``, ``publishing``) and their results into widget
values; expected mistakes become a ``gr.Error`` with the one-line message the CLI would print.
Long work (explaining, scoring, building the default run, publishing) goes through Gradio's
queue one job at a time, with progress read from the library's tqdm bars; browsing stays
served meanwhile.
"""

import functools
import html
import logging
import threading

import gradio as gr
import pandas as pd

from ..errors import InterpError
from ..explain import EXPLAINERS
from ..scoring.classify import MODES as SCORE_MODES
from ..scoring.registry import SCORERS
from ..steer import MODES as STEER_MODES
from . import explore, intervene, pipeline, publishing
from .config import AppConfig
from .explore import Table
from .render import markdown_code, markdown_text
from .session import Runs, build_default_run, run_is_complete
from .workspace import Workspace

log = logging.getLogger(__name__)

PIPELINE = "pipeline"
"""Concurrency group of the jobs that write to run directories and load their own models: one at a time."""
MODEL = "model"
"""Concurrency group of the forward passes on a run's shared model."""
THEME_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
"""System fonts: the default theme would fetch web fonts, which an offline machine or a private Space should not."""


def _errors(fn):
    """Show expected mistakes (``InterpError``) on the page as the one-line message the CLI prints.

    Gradio renders an error's message as HTML and messages quote what was typed, so it is escaped.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InterpError as e:
            raise gr.Error(html.escape(str(e), quote=False), print_exception=False) from None

    return wrapper


def _frame(table: Table) -> pd.DataFrame:
    """A Table as a DataFrame Gradio shows as plain text (blank where there is no value)."""
    rows = [["" if v is None else float(f"{v:.4g}") if isinstance(v, float) else v for v in row] for row in table.rows]
    return pd.DataFrame(rows, columns=table.headers)


def _latent(value) -> int:
    """The latent number typed into the top bar."""
    if value is None:
        raise InterpError("Type a latent number in the top bar.")
    return int(value)


def _number(value, what: str) -> float:
    """A number typed in the Intervene panel (the API may send any JSON value there)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InterpError(f"{str(value)[:40]!r} is not a number: type {what}.") from None


def _empty(headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=headers)


def _llm_widgets(prefix: str, config: AppConfig):
    """The LLM choice (backend, local model, server URL and model), with element ids starting with ``prefix``."""
    with gr.Accordion("LLM", open=False, elem_id=f"{prefix}-llm"):
        backend = gr.Radio(list(pipeline.BACKENDS), value="local", label="Backend", elem_id=f"{prefix}-backend",
                           info="local: run a model in this process; url: an OpenAI-compatible server"
                           + (" (key from $OPENAI_API_KEY)" if config.env_token else " (the owner's key goes only to their own server)"))
        with gr.Row():
            local_model = gr.Textbox(label="Local model", elem_id=f"{prefix}-local-model",
                                     placeholder="empty: the embedded SmolLM2; or a Hub id / a folder in the workspace")
            url = gr.Textbox(value=config.llm_url, label="Server URL", placeholder="http://127.0.0.1:8000/v1", elem_id=f"{prefix}-url")
            server_model = gr.Textbox(label="Server model", placeholder="Qwen/Qwen2.5-7B-Instruct", elem_id=f"{prefix}-server-model")
    return [backend, local_model, url, server_model]


def build_app(config: AppConfig) -> gr.Blocks:
    """The app's page for ``config`` (not launched)."""
    workspace = Workspace(config.workspace)
    runs = Runs(workspace)
    building = threading.Lock()  # one build of the default run, however many visitors arrive while it runs
    keyed = None if config.env_token else frozenset(filter(None, [config.llm_url]))  # who may receive $OPENAI_API_KEY

    def llm(backend, local_model, url, server_model):
        # widgets of a closed accordion send None
        return pipeline.llm_spec(workspace, backend or "local", local_model or "", url or "", server_model or "", keyed_urls=keyed)

    def open_run(path: str):
        run = runs.get(path)
        coders = run.coder_names()
        coder = coders[0] if coders else None
        table = explore.latent_table(run, coder) if coder else Table(explore.LATENT_HEADERS, [])
        first = table.rows[0][0] if table.rows else 0
        explainers = pipeline.explainers(run)
        scorers = sorted({r["scorer"] for r in run.scores()})
        return (
            explore.describe(run),
            gr.Dropdown(choices=coders, value=coder),
            gr.Number(value=first),
            gr.Dropdown(choices=explore.sort_choices(run), value="latent"),
            _frame(table),
            gr.Dropdown(choices=explainers, value=explainers[0] if explainers else None),
            gr.Dropdown(choices=scorers, value=scorers[0] if scorers else None),
        )

    def start(path: str, progress=gr.Progress(track_tqdm=True)):
        """On page load: build the default run if asked to and it is missing, then open the run.

        A run that cannot be opened is explained in the status line, with the build button when
        it is the default run.
        """
        default = path == config.run_dir
        try:
            if config.build_demo and default and not run_is_complete(workspace.resolve(path)):
                progress(0, desc="building the default run (first start only)")
                with building:
                    build_default_run(workspace, path)
            return (*open_run(path), gr.Button(visible=False))
        except InterpError as e:
            message = markdown_text(str(e))
            hint = " Or build the default run here with the button below." if default else ""
            return (f"**Cannot open the run:** {message}{hint}", *[gr.skip()] * 6, gr.Button(visible=default))

    @_errors
    def build(progress=gr.Progress(track_tqdm=True)):
        with building:
            build_default_run(workspace, config.run_dir)
        return gr.Dropdown(choices=workspace.runs(), value=config.run_dir)

    @_errors
    def refresh(path):
        return explore.describe(runs.get(path))

    @_errors
    def latents(path, coder, query, sort):
        return _frame(explore.latent_table(runs.get(path), coder, query or "", sort or "latent"))

    def pick(evt: gr.SelectData):
        return int(evt.row_value[0])

    @_errors
    def show_latent(path, coder, latent):
        if not coder:  # no run is open
            return (gr.skip(),) * 8
        v = explore.latent_view(runs.get(path), coder, _latent(latent))
        return (v.stats, v.histogram, _frame(v.explanations), _frame(v.scores), v.top, v.quantiles,
                _frame(v.promoted), _frame(v.suppressed))

    @_errors
    def test_text(path, coder, text, latent):
        t = explore.text_latents(runs.get(path), coder, text or "", None if latent is None else int(latent))
        return t.highlight, _frame(t.latents)

    @_errors
    def explain(path, coder, latent, explainer, which, selection, backend, local_model, url, server_model,
                progress=gr.Progress(track_tqdm=True)):
        run = runs.get(path)
        spec = str(_latent(latent)) if which == "this latent" else (selection or "").strip()
        summary, table = pipeline.explain(run, coder, explainer, llm(backend, local_model, url, server_model), spec)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(summary["explanations"].items()))
        status = (f"**{explainer}** explanations of {markdown_code(coder)} (latents {markdown_text(spec)}): done. "
                  f"All {explainer} lines in the run: {counts}.")
        return status, _frame(table), gr.Dropdown(choices=pipeline.explainers(run), value=explainer)

    @_errors
    def score(path, coder, explainer, scorers, mode, backend, local_model, url, server_model,
              progress=gr.Progress(track_tqdm=True)):
        run = runs.get(path)
        if not explainer:
            raise InterpError("There are no explanations to score yet: explain some latents first.")
        table = pipeline.score(run, coder, explainer, scorers or [], mode, llm(backend, local_model, url, server_model))
        names = sorted({r["scorer"] for r in run.scores()})
        return _frame(table), pipeline.plots(run, coder, explainer), gr.Dropdown(choices=names, value=names[0] if names else None)

    @_errors
    def outcomes(path, coder, latent, scorer, explainer):
        if not scorer:
            raise InterpError("Score some explanations first: there is no scorer to show.")
        o = pipeline.outcomes(runs.get(path), coder, _latent(latent), scorer, explainer)
        return f"{o.metrics}  \n{o.right} right, {o.wrong} wrong", _frame(o.table)

    @_errors
    def steer(path, coder, latent, prompt, mode, how, value, max_new_tokens):
        if value is None and mode != "ablate":
            raise InterpError("Type a strength or a target KL.")
        strength = _number(value, "a strength") if how == "strength" and mode != "ablate" else None
        target_kl = _number(value, "a target KL") if how == "target KL" and mode != "ablate" else None
        s = intervene.steer_prompt(runs.get(path), coder, _latent(latent), prompt or "", mode=mode, strength=strength,
                                   target_kl=target_kl, max_new_tokens=_number(max_new_tokens, "how many new tokens"))
        return s.summary, s.result.clean, s.result.steered, _frame(s.changes)

    @_errors
    def preview(path):
        table, card = publishing.preview_table(runs.get(path))
        return _frame(table), card

    @_errors
    def publish(path, repo_id, token, private, progress=gr.Progress(track_tqdm=True)):
        result = publishing.push(runs.get(path), repo_id or "", token or "", private=bool(private), env_token=config.env_token)
        rows = ", ".join(f"{name}: {n} rows" for name, n in result.rows.items())
        visibility = "private" if result.private else "public"
        return f"Published to [{result.repo_id}]({result.url}) ({visibility}; {rows}), commit {result.commit_url}", ""

    token_info = ("used for this push only, never stored; leave empty to use $HF_TOKEN" if config.env_token
                  else "used for this push only, never stored")
    with gr.Blocks(title="interp", analytics_enabled=False) as page:
        gr.Markdown("# interp — automated interpretability of sparse latents")
        with gr.Row(equal_height=True):
            run_box = gr.Dropdown(choices=workspace.runs(), value=config.run_dir, allow_custom_value=True, scale=3,
                                  label="Run directory", info=f"inside the workspace {workspace.root}", elem_id="run")
            coder_box = gr.Dropdown(choices=[], label="Coder", allow_custom_value=True, scale=3, elem_id="coder")
            latent_box = gr.Number(value=0, precision=0, minimum=0, label="Latent", scale=1, elem_id="latent")
            open_btn = gr.Button("Open", scale=1, elem_id="open")
        status = gr.Markdown(elem_id="status")
        build_btn = gr.Button(f"Build the default run into {config.run_dir} (about 6 minutes on 2 CPUs)", size="sm",
                              visible=False, elem_id="build")

        with gr.Tab("Explore", elem_id="tab-explore"):
            with gr.Row():
                query = gr.Textbox(label="Search explanations", placeholder="a word or phrase", scale=3, elem_id="query")
                sort = gr.Dropdown(choices=list(explore.SORTS), value="latent", label="Sort by", allow_custom_value=True, scale=2, elem_id="sort")
                search_btn = gr.Button("Search", scale=1, elem_id="search")
            table = gr.Dataframe(value=_empty(explore.LATENT_HEADERS), label="Explained latents (click a row to open it)", interactive=False, wrap=True,
                                 max_height=320, elem_id="latents")
            show_btn = gr.Button("Show latent", variant="primary", elem_id="show")
            stats = gr.Markdown(elem_id="stats")
            with gr.Row():
                hist = gr.Plot(label="Activation histogram", elem_id="histogram", scale=2)
                expl_table = gr.Dataframe(value=_empty(explore.EXPLANATION_HEADERS), label="Explanations", interactive=False, wrap=True, elem_id="explanations", scale=3)
            score_table = gr.Dataframe(value=_empty(explore.SCORE_HEADERS), label="Scores: the explanation against a random one", interactive=False,
                                       wrap=True, elem_id="scores")
            gr.Markdown("### Top examples (hover a token for its activation)")
            top_html = gr.HTML(elem_id="top")
            gr.Markdown("### Held-out examples by activation quantile")
            quant_html = gr.HTML(elem_id="quantiles")
            with gr.Row():
                promoted = gr.Dataframe(value=_empty(explore.TOKEN_HEADERS), label="Promoted tokens", interactive=False, elem_id="promoted")
                suppressed = gr.Dataframe(value=_empty(explore.TOKEN_HEADERS), label="Suppressed tokens", interactive=False, elem_id="suppressed")
            with gr.Accordion("Test my text: which latents fire on it?", open=True):
                my_text = gr.Textbox(label="Your text", lines=2, elem_id="my-text")
                test_btn = gr.Button("Which latents fire?", elem_id="test-text")
                text_html = gr.HTML(elem_id="text-highlight")
                text_table = gr.Dataframe(value=_empty(explore.TEXT_HEADERS), label="Latents firing on the text", interactive=False, wrap=True, elem_id="text-latents")

        with gr.Tab("Explain", elem_id="tab-explain"):
            with gr.Row():
                explainer = gr.Dropdown(list(EXPLAINERS), value="default", label="Explainer", elem_id="explainer",
                                        info="tokens needs no LLM; intervention steers the latent")
                which = gr.Radio(["this latent", "a selection"], value="this latent", label="Explain", elem_id="which")
                selection = gr.Textbox(value="sample:8", label="Selection", info="all, sample:N, A-B or A,B,C", elem_id="selection")
            explain_llm = _llm_widgets("explain", config)
            explain_btn = gr.Button("Explain", variant="primary", elem_id="explain")
            explain_status = gr.Markdown(elem_id="explain-status")
            explain_table = gr.Dataframe(value=_empty(pipeline.EXPLAINED_HEADERS), label="Explanations", interactive=False, wrap=True, elem_id="explained")

        with gr.Tab("Score", elem_id="tab-score"):
            with gr.Row():
                score_explainer = gr.Dropdown(choices=[], label="Explanations of", allow_custom_value=True, elem_id="score-explainer")
                scorers = gr.CheckboxGroup(list(SCORERS), value=["embedding"], label="Scorers", elem_id="scorers")
                mode = gr.Radio(list(SCORE_MODES), value="logprob", label="LLM scorers answer by", elem_id="score-mode")
            score_llm = _llm_widgets("score", config)
            score_btn = gr.Button("Score", variant="primary", elem_id="score")
            summary = gr.Dataframe(value=_empty(pipeline.SUMMARY_HEADERS), label="Summary (mean over latents)", interactive=False, elem_id="summary")
            gallery = gr.Gallery(label="Summary plots", columns=3, height="auto", object_fit="contain", elem_id="plots")
            gr.Markdown("### Per-example outcomes of the chosen latent")
            with gr.Row():
                outcome_scorer = gr.Dropdown(choices=[], label="Scorer", allow_custom_value=True, elem_id="outcome-scorer")
                outcomes_btn = gr.Button("Show outcomes", elem_id="outcomes")
            outcome_md = gr.Markdown(elem_id="outcome-metrics")
            outcome_table = gr.Dataframe(value=_empty(pipeline.OUTCOME_HEADERS), label="Each held-out example: did the scorer get it right?", interactive=False,
                                         wrap=True, elem_id="outcome-table")

        with gr.Tab("Intervene", elem_id="tab-intervene"):
            prompt = gr.Textbox(value="My favourite animal is", label="Prompt", elem_id="prompt")
            with gr.Row():
                steer_mode = gr.Radio(list(STEER_MODES), value="add", label="Mode", elem_id="steer-mode")
                how = gr.Radio(["strength", "target KL"], value="target KL", label="Set", elem_id="how")
                value = gr.Number(value=1.0, label="Strength / target KL (nats)", elem_id="value")
                max_new = gr.Slider(1, intervene.MAX_NEW_TOKENS, value=24, step=1, label="New tokens", elem_id="max-new")
            steer_btn = gr.Button("Steer", variant="primary", elem_id="steer")
            steer_md = gr.Markdown(elem_id="steer-summary")
            with gr.Row():
                clean = gr.Textbox(label="Clean continuation", lines=4, elem_id="clean")
                steered = gr.Textbox(label="Steered continuation", lines=4, elem_id="steered")
            changes = gr.Dataframe(value=_empty(intervene.CHANGE_HEADERS), label="Next tokens made most likely", interactive=False, elem_id="changes")

        with gr.Tab("Publish", elem_id="tab-publish"):
            preview_btn = gr.Button("Preview the dataset", elem_id="preview")
            preview_table = gr.Dataframe(value=_empty(publishing.PREVIEW_HEADERS), label="First rows (one per explained latent)", interactive=False, wrap=True,
                                         elem_id="preview-rows")
            card = gr.Code(label="Dataset card (README.md)", language="markdown", interactive=False, max_lines=30, elem_id="card")
            with gr.Row():
                repo = gr.Textbox(label="Dataset repository", placeholder="owner/name", elem_id="repo")
                token = gr.Textbox(label="Hugging Face write token", type="password", info=token_info, elem_id="token")
                private = gr.Checkbox(label="Private", elem_id="private")
            publish_btn = gr.Button("Publish", variant="primary", elem_id="publish")
            publish_md = gr.Markdown(elem_id="publish-result")

        opened = [status, coder_box, latent_box, sort, table, score_explainer, outcome_scorer]
        view = [stats, hist, expl_table, score_table, top_html, quant_html, promoted, suppressed]
        page.load(start, [run_box], [*opened, build_btn], api_visibility="private").then(
            show_latent, [run_box, coder_box, latent_box], view, api_visibility="private")
        open_btn.click(_errors(open_run), [run_box], opened, api_name="open_run").then(
            show_latent, [run_box, coder_box, latent_box], view, api_visibility="private")
        build_btn.click(build, None, [run_box], api_name="build").then(
            start, [run_box], [*opened, build_btn], api_visibility="private")
        search_btn.click(latents, [run_box, coder_box, query, sort], [table], api_name="latents")
        for trigger in (query.submit, sort.input, coder_box.input):
            trigger(latents, [run_box, coder_box, query, sort], [table], api_visibility="private")
        table.select(pick, None, [latent_box], api_visibility="private").then(
            show_latent, [run_box, coder_box, latent_box], view, api_visibility="private")
        show_btn.click(show_latent, [run_box, coder_box, latent_box], view, api_name="latent")
        latent_box.submit(show_latent, [run_box, coder_box, latent_box], view, api_visibility="private")
        test_btn.click(test_text, [run_box, coder_box, my_text, latent_box], [text_html, text_table], api_name="test_text",
                       concurrency_id=MODEL, concurrency_limit=1)
        explain_btn.click(explain, [run_box, coder_box, latent_box, explainer, which, selection, *explain_llm],
                          [explain_status, explain_table, score_explainer], api_name="explain",
                          concurrency_id=PIPELINE, concurrency_limit=1).then(refresh, [run_box], [status], api_visibility="private")
        score_btn.click(score, [run_box, coder_box, score_explainer, scorers, mode, *score_llm],
                        [summary, gallery, outcome_scorer], api_name="score", concurrency_id=PIPELINE, concurrency_limit=1).then(
            refresh, [run_box], [status], api_visibility="private")
        outcomes_btn.click(outcomes, [run_box, coder_box, latent_box, outcome_scorer, score_explainer],
                           [outcome_md, outcome_table], api_name="outcomes")
        steer_btn.click(steer, [run_box, coder_box, latent_box, prompt, steer_mode, how, value, max_new],
                        [steer_md, clean, steered, changes], api_name="steer", concurrency_id=MODEL, concurrency_limit=1)
        preview_btn.click(preview, [run_box], [preview_table, card], api_name="preview", concurrency_id=MODEL, concurrency_limit=1)
        publish_btn.click(publish, [run_box, repo, token, private], [publish_md, token], api_name="publish",
                          concurrency_id=PIPELINE, concurrency_limit=1)
    return page


def theme() -> gr.themes.Base:
    """Gradio's default theme with system fonts only."""
    return gr.themes.Default(**THEME_FONTS)
