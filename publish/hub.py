"""A run directory -> a dataset folder (Parquet + card) -> one commit on the Hugging Face Hub.

The token comes from the ``token`` argument, else the environment variable ``token_env``
(``HF_TOKEN``), else the huggingface_hub login. It only ever travels in the Authorization
header: it is never written into the data, the card, the result or a log line.

    >>> publish_run("runs/demo", "me/smollm2-explanations", private=True)
    >>> preview("runs/demo")            # the first rows and the card, nothing written
"""

import logging
import os
from pathlib import Path
from typing import NamedTuple

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from interp.atomic import remove_stale_temps, write_atomic
from interp.models import LoadedModel

from .card import make_card
from .dataset import DATA_DIR, PublishError, RunData, build_dataset, read_run, write_dataset

log = logging.getLogger(__name__)

TOKEN_ENV = "HF_TOKEN"
"""The dataset folder's default place, inside the run directory."""
CARD = "README.md"
LICENSE = "cc-by-4.0"


class Folder(NamedTuple):
    """A dataset folder ready to upload."""

    path: Path
    files: list[str]
    """Paths relative to ``path``: the card first, then one Parquet file per config."""
    rows: dict[str, int]
    """Config name -> rows."""


class PublishResult(NamedTuple):
    """What ``publish_run`` did."""

    repo_id: str
    url: str
    """The dataset's page (``<endpoint>/datasets/<repo_id>``)."""
    folder: Path
    rows: dict[str, int]
    commit_url: str | None
    """None for a dry run."""
    commit_oid: str | None
    uploaded: list[str]
    """Files in the commit (files the Hub already had byte for byte are skipped by huggingface_hub but listed here)."""
    deleted: list[str]
    """Data files of an earlier publication that this one no longer has."""
    private: bool | None
    """The repository's visibility after the commit; None for a dry run."""


class Preview(NamedTuple):
    """The first rows of a run's dataset and its card, for a look before publishing."""

    rows: list[dict]
    card: str


def write_folder(
    run: RunData | str | Path,
    out_dir: str | Path | None = None,
    *,
    repo_id: str,
    license: str = LICENSE,
    lm: LoadedModel | None = None,
    progress: bool = True,
) -> Folder:
    """Build the dataset of a run and write it with its card into ``out_dir`` (default ``<run dir>/publish``)."""
    run = run if isinstance(run, RunData) else read_run(run)
    out = Path(out_dir) if out_dir is not None else run.run.publish_dir
    remove_stale_temps(out)  # what an interrupted publish was writing
    data_files, counts = write_dataset(run, out, lm=lm, progress=progress)
    card = make_card(run, repo_id=repo_id, license=license)
    write_atomic(out / CARD, lambda p: p.write_text(card, encoding="utf-8"))
    return Folder(out, [CARD, *data_files], counts)


def preview(run_dir: str | Path, *, n: int = 5, repo_id: str = "USER/REPO", lm: LoadedModel | None = None) -> Preview:
    """The first ``n`` rows (of the first coders) and the card text, without writing anything."""
    run = read_run(run_dir)
    tables = build_dataset(run, lm=lm, limit=n, progress=False)
    rows = [row for table in tables.values() for row in table.to_list()][:n]
    return Preview(rows, make_card(run, repo_id=repo_id))


def resolve_token(token: str | None = None, token_env: str = TOKEN_ENV) -> str:
    """The token to publish with: ``token``, else ``$token_env``, else the huggingface_hub login."""
    token = token or os.environ.get(token_env) or get_token()
    if not token:
        raise PublishError(
            f"No Hugging Face token: set ${token_env} (a write token from https://huggingface.co/settings/tokens), "
            "run `hf auth login`, or pass --token-env NAME."
        )
    return token


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub to talk to: ``endpoint``, else ``$HF_ENDPOINT`` as it is now, else huggingface_hub's default."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _one_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _api(endpoint: str, token: str) -> HfApi:
    return HfApi(endpoint=endpoint, token=token, library_name="interp")


def _hub_call(repo_id: str, endpoint: str, call):
    """Run ``call()``, turning the Hub's refusals into one-line PublishErrors (the token is never in them)."""
    try:
        return call()
    except (HfHubHTTPError, OfflineModeIsEnabled, ValueError) as e:
        raise PublishError(f"Publishing to {repo_id} at {endpoint} failed: {_one_line(e)}") from e


def ensure_repo(api: HfApi, repo_id: str, *, private: bool = False) -> bool:
    """Create the dataset repo if it is missing; return whether it is private.

    An existing repository keeps its visibility; asking for ``private`` on a public one is
    refused rather than publishing what was meant to stay private.
    """

    def call() -> bool:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        return bool(api.repo_info(repo_id, repo_type="dataset").private)

    is_private = _hub_call(repo_id, api.endpoint, call)
    if private and not is_private:
        raise PublishError(
            f"{repo_id} already exists and is public; "
            "make it private on the Hub first, or publish to a new repository."
        )
    return is_private


def _commit(api: HfApi, folder: Folder, repo_id: str, is_private: bool) -> PublishResult:
    """Upload ``folder`` in one commit, deleting the repo's data files that the folder no longer has."""
    rows = sum(folder.rows.values())

    def call():
        remote = set(api.list_repo_files(repo_id, repo_type="dataset"))
        stale = sorted(p for p in remote if p.startswith(f"{DATA_DIR}/") and p not in folder.files)
        operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder.path / f)) for f in folder.files]
        operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
        message = f"Publish explanations of {rows} latents ({len(folder.rows)} configs) with interp"
        return api.create_commit(repo_id, operations, repo_type="dataset", commit_message=message), stale

    commit, stale = _hub_call(repo_id, api.endpoint, call)
    log.info("published %d rows to %s/datasets/%s (commit %s)", rows, api.endpoint, repo_id, commit.oid)
    return PublishResult(
        repo_id,
        f"{api.endpoint}/datasets/{repo_id}",
        folder.path,
        folder.rows,
        commit.commit_url,
        commit.oid,
        list(folder.files),
        stale,
        is_private,
    )


def push_folder(
    folder: Folder, repo_id: str, *, token: str, private: bool = False, endpoint: str | None = None
) -> PublishResult:
    """Create the dataset repo if needed and upload ``folder`` in one commit (see ``ensure_repo`` on visibility)."""
    api = _api(hub_endpoint(endpoint), token)
    return _commit(api, folder, repo_id, ensure_repo(api, repo_id, private=private))


def publish_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    token_env: str = TOKEN_ENV,
    private: bool = False,
    out_dir: str | Path | None = None,
    dry_run: bool = False,
    license: str = LICENSE,
    endpoint: str | None = None,
    lm: LoadedModel | None = None,
    progress: bool = True,
) -> PublishResult:
    """Publish ``run_dir`` as the dataset ``repo_id``: build the folder, then push it (unless ``dry_run``).

    Re-publishing updates the same repository with a new commit. The Gradio app's Publish
    panel and ``interp publish`` both call this.
    """
    run = read_run(run_dir)
    endpoint = hub_endpoint(endpoint)
    if dry_run:
        folder = write_folder(run, out_dir, repo_id=repo_id, license=license, lm=lm, progress=progress)
        return PublishResult(
            repo_id, f"{endpoint}/datasets/{repo_id}", folder.path, folder.rows, None, None, [], [], None
        )
    api = _api(endpoint, resolve_token(token, token_env))
    is_private = ensure_repo(api, repo_id, private=private)  # a refused token or repo fails before the slow build
    folder = write_folder(run, out_dir, repo_id=repo_id, license=license, lm=lm, progress=progress)
    return _commit(api, folder, repo_id, is_private)
