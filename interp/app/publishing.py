"""The Publish panel: preview the dataset a run becomes and push it, through ``publish.hub``.

A token typed into the page is used for this one call and forgotten: it is not logged, not
written, and scrubbed from any error message before the page sees it.
"""

import json

from ..errors import InterpError
from .explore import Table
from .session import OpenRun

PREVIEW_ROWS = 5
PREVIEW_HEADERS = [
    "coder",
    "latent",
    "status",
    "explanation",
    "explainer",
    "count",
    "frequency",
    "scores [random]",
    "promotes",
]


def preview_table(run: OpenRun, n: int = PREVIEW_ROWS) -> tuple[Table, str]:
    """The first ``n`` rows of the dataset (one per explained latent) and the dataset card."""
    from publish.hub import preview

    lm = run.model().lm
    rows, card = preview(run.path, n=n, lm=lm)
    out = []
    for r in rows:
        scores = "; ".join(
            f"{s['scorer']} {s['metric']} {s['value']:.3g}"
            + (f" [{s['baseline_value']:.3g}]" if s["baseline_value"] is not None else "")
            for s in r["scores"]
            if s["value"] is not None
        )
        out.append(
            [
                r["coder"],
                r["latent"],
                r["status"],
                r["explanation"] or "",
                r["explainer"] or "",
                r["count"],
                r["frequency"],
                scores,
                json.dumps([t["token"] for t in r["promoted_tokens"][:5]]),
            ]
        )
    return Table(PREVIEW_HEADERS, out), card


def push(
    run: OpenRun,
    repo_id: str,
    token: str = "",
    *,
    private: bool = False,
    env_token: bool = True,
    progress: bool = True,
):
    """Publish the run to the Hub dataset ``repo_id`` with ``token``, or (if allowed) the
    environment's; a ``PublishResult``.
    """
    from publish.hub import publish_run

    repo_id, token = repo_id.strip(), token.strip()
    if not repo_id or repo_id.count("/") != 1:
        raise InterpError(f"Give the dataset repository as owner/name, not {repo_id!r}.")
    if not token and not env_token:
        raise InterpError(
            "Type a Hugging Face write token: this app does not publish with a token from its environment."
        )
    lm = run.model().lm
    try:
        return publish_run(run.path, repo_id, token=token or None, private=private, lm=lm, progress=progress)
    except InterpError as e:
        message = str(e).replace(token, "***") if token else str(e)
        raise InterpError(message) from None
