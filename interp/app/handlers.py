"""The page's event handlers: widget values in, a call of a panel function, widget values out.

``Handlers`` holds what every handler shares (the configuration, the workspace, the runs this
page has open) and one method per handler, most named after the API endpoint they serve. Expected
mistakes become a ``gr.Error`` with the one-line message the CLI would print (``show_errors``).
The handlers on the API carry no docstring: Gradio would show it as the endpoint's description.
"""

import functools
import html
import inspect

import gradio as gr
import pandas as pd

from ..errors import InterpError
from . import explain_score, explore, intervene, publishing
from .config import AppConfig
from .explore import Table
from .render import markdown_code, markdown_text
from .session import Runs, run_is_complete
from .workspace import Workspace

NO_LATENTS = Table(explore.LATENT_HEADERS, [])


def show_errors(fn):
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


def frame(table: Table) -> pd.DataFrame:
    """A Table as a DataFrame Gradio shows as plain text (blank where there is no value)."""
    rows = [["" if v is None else float(f"{v:.4g}") if isinstance(v, float) else v for v in row] for row in table.rows]
    return pd.DataFrame(rows, columns=table.headers)


def _latent(value) -> int:
    """The latent number typed into the top bar."""
    if value is None:
        raise InterpError("Type a latent number in the top bar.")
    return int(value)


def _page(value) -> int:
    """The page number in the Explore panel (empty: the first; the API may send any JSON value)."""
    if value is None:
        return 1
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise InterpError(f"{str(value)[:40]!r} is not a page number: type 1 or more.") from None


def _number(value, what: str) -> float:
    """A number typed in the Intervene panel (the API may send any JSON value there)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InterpError(f"{str(value)[:40]!r} is not a number: type {what}.") from None


class Handlers:
    """Every event handler of one page, over the runs it has open (``session.Runs``)."""

    def __init__(self, config: AppConfig):
        self.config = config
        self.workspace = Workspace(config.workspace)
        self.runs = Runs(self.workspace)
        self.keyed = None if config.env_token else frozenset(filter(None, [config.llm_url]))
        """Server URLs that may receive $OPENAI_API_KEY; None: any."""
        # Gradio queues the events of one handler object together (its default concurrency_id is
        # id(fn)), and each attribute access makes a new bound method: so bind each handler once.
        for name, method in inspect.getmembers(self, inspect.ismethod):
            if not name.startswith("_"):
                setattr(self, name, method)

    def llm(self, backend, local_model, url, server_model) -> explain_score.LLMChoice:
        """The LLM chosen in a tab's LLM accordion (a closed accordion's widgets send None)."""
        return explain_score.llm_spec(
            self.workspace, backend or "local", local_model or "", url or "", server_model or "", keyed_urls=self.keyed
        )

    def open_run(self, path: str):
        # status, coder, latent, sort, latent table, score explainer, outcome scorer, page line, page number
        run = self.runs.get(path)
        coders = run.coder_names()
        coder = coders[0] if coders else None
        page = explore.latent_page(run, coder) if coder else explore.LatentPage(NO_LATENTS, 1, 1, 0)
        first = page.table.rows[0][0] if page.table.rows else 0
        explainers = explain_score.explainers(run)
        scorers = run.scorer_names()
        return (
            explore.describe(run),
            gr.Dropdown(choices=coders, value=coder),
            gr.Number(value=first),
            gr.Dropdown(choices=explore.sort_choices(run), value="latent"),
            frame(page.table),
            gr.Dropdown(choices=explainers, value=explainers[0] if explainers else None),
            gr.Dropdown(choices=scorers, value=scorers[0] if scorers else None),
            page.line(),
            page.page,
        )

    def start(self, path: str, progress=gr.Progress(track_tqdm=True)):
        """On page load: build the default run if asked to and it is missing, then open the run.

        A run that cannot be opened is explained in the status line, with the build button when
        it is the default run.
        """
        default = path == self.config.run_dir
        try:
            if self.config.build_demo and default and not run_is_complete(self.workspace.resolve(path)):
                progress(0, desc="building the default run (first start only)")
                self.runs.build_default(path, self.config.demo_config())
            return (*self.open_run(path), gr.Button(visible=False))
        except InterpError as e:
            message = markdown_text(str(e))
            hint = " Or build the default run here with the button below." if default else ""
            return (f"**Cannot open the run:** {message}{hint}", *[gr.skip()] * 8, gr.Button(visible=default))

    @show_errors
    def build(self, progress=gr.Progress(track_tqdm=True)):
        self.runs.build_default(self.config.run_dir, self.config.demo_config())
        return gr.Dropdown(choices=self.workspace.runs(), value=self.config.run_dir)

    @show_errors
    def refresh(self, path):
        return explore.describe(self.runs.get(path))

    @show_errors
    def latents(self, path, coder, query, sort, page=1):
        # the table, and where the page stands (a State, so the API still answers the table alone)
        p = explore.latent_page(self.runs.get(path), coder, query or "", sort or "latent", _page(page))
        return frame(p.table), {"line": p.line(), "page": p.page}

    @show_errors
    def previous_page(self, path, coder, query, sort, page):
        """The page before ``page`` of the latent table."""
        return self.latents(path, coder, query, sort, _page(page) - 1)

    @show_errors
    def next_page(self, path, coder, query, sort, page):
        """The page after ``page`` of the latent table (the last stays the last)."""
        return self.latents(path, coder, query, sort, _page(page) + 1)

    def show_page(self, shown):
        """The "page X of N" line and the page number of the page ``latents`` has just sent."""
        return (shown["line"], shown["page"]) if shown else (gr.skip(), gr.skip())

    def pick(self, evt: gr.SelectData):
        return int(evt.row_value[0])

    @show_errors
    def show_latent(self, path, coder, latent):
        if not coder:  # no run is open
            return (gr.skip(),) * 8
        v = explore.latent_view(self.runs.get(path), coder, _latent(latent))
        return (
            v.stats,
            v.histogram,
            frame(v.explanations),
            frame(v.scores),
            v.top,
            v.quantiles,
            frame(v.promoted),
            frame(v.suppressed),
        )

    @show_errors
    def candidates(self, path, coder, latent):
        """The chosen latent's search candidates, shown only when one of its explanations was searched."""
        if not coder or latent is None:
            return gr.skip()
        table = explore.candidates_table(self.runs.get(path), coder, _latent(latent))
        return gr.Dataframe(value=frame(table), visible=bool(table.rows))

    @show_errors
    def test_text(self, path, coder, text, latent):
        t = explore.text_latents(self.runs.get(path), coder, text or "", None if latent is None else int(latent))
        return t.highlight, frame(t.latents)

    @show_errors
    def explain(
        self,
        path,
        coder,
        latent,
        explainer,
        which,
        selection,
        backend,
        local_model,
        url,
        server_model,
        search=None,
        candidates=None,
        rounds=None,
        judge=None,
        temperature=None,
        tokens_candidate=None,
        redo=False,
        progress=gr.Progress(track_tqdm=True),
    ):
        run = self.runs.get(path)
        spec = str(_latent(latent)) if which == "this latent" else (selection or "").strip()
        chosen = explain_score.search_spec(search, candidates, rounds, judge, temperature, tokens_candidate)
        summary, table = explain_score.explain(
            run,
            coder,
            explainer,
            self.llm(backend, local_model, url, server_model),
            spec,
            search=chosen,
            redo=bool(redo),
        )
        counts = ", ".join(f"{n} {s}" for s, n in sorted(summary["explanations"].items()))
        status = (
            f"**{explainer}** explanations of {markdown_code(coder)} (latents {markdown_text(spec)}): done. "
            f"All {explainer} lines in the run: {counts}."
        )
        others = 0 if redo else explain_score.other_searches(run, coder, explainer, spec, chosen)
        if others:
            status += (
                f" {others} of the chosen latents kept explanations made with other search settings: "
                "tick *Explain again* to redo them."
            )
        return status, frame(table), gr.Dropdown(choices=explain_score.explainers(run), value=explainer)

    @show_errors
    def score(
        self,
        path,
        coder,
        explainer,
        scorers,
        mode,
        backend,
        local_model,
        url,
        server_model,
        progress=gr.Progress(track_tqdm=True),
    ):
        run = self.runs.get(path)
        if not explainer:
            raise InterpError("There are no explanations to score yet: explain some latents first.")
        table = explain_score.score(
            run, coder, explainer, scorers or [], mode, self.llm(backend, local_model, url, server_model)
        )
        names = run.scorer_names()
        return (
            frame(table),
            explain_score.plots(run, coder, explainer),
            gr.Dropdown(choices=names, value=names[0] if names else None),
        )

    @show_errors
    def outcomes(self, path, coder, latent, scorer, explainer):
        if not scorer:
            raise InterpError("Score some explanations first: there is no scorer to show.")
        o = explain_score.outcomes(self.runs.get(path), coder, _latent(latent), scorer, explainer)
        return f"{o.metrics}  \n{o.right} right, {o.wrong} wrong", frame(o.table)

    @show_errors
    def steer(self, path, coder, latent, prompt, mode, how, value, max_new_tokens):
        if value is None and mode != "ablate":
            raise InterpError("Type a strength or a target KL.")
        strength = _number(value, "a strength") if how == "strength" and mode != "ablate" else None
        target_kl = _number(value, "a target KL") if how == "target KL" and mode != "ablate" else None
        s = intervene.steer_prompt(
            self.runs.get(path),
            coder,
            _latent(latent),
            prompt or "",
            mode=mode,
            strength=strength,
            target_kl=target_kl,
            max_new_tokens=_number(max_new_tokens, "how many new tokens"),
        )
        return s.summary, s.result.clean, s.result.steered, frame(s.changes)

    @show_errors
    def preview(self, path):
        table, card = publishing.preview_table(self.runs.get(path))
        return frame(table), card

    @show_errors
    def publish(self, path, repo_id, token, private, progress=gr.Progress(track_tqdm=True)):
        result = publishing.push(
            self.runs.get(path), repo_id or "", token or "", private=bool(private), env_token=self.config.env_token
        )
        rows = ", ".join(f"{name}: {n} rows" for name, n in result.rows.items())
        visibility = "private" if result.private else "public"
        return f"Published to [{result.repo_id}]({result.url}) ({visibility}; {rows}), commit {result.commit_url}", ""
