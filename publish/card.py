"""The dataset card (README.md) of a published run: YAML metadata the Hub reads, prose people read.

The metadata is built with huggingface_hub's ``DatasetCardData`` and datasets' own writers
for ``configs`` and ``dataset_info``, so the Hub and ``datasets.load_dataset`` read it as
they read any dataset. The prose says how the data was made (model, corpus, coders, records,
explainers, scorers and their settings), the summary scores against the random-explanation
baseline, how to load it, and its limitations.
"""

import json

from datasets import DatasetInfo, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from interp.views import EXPLAINER_SEES

from .dataset import EMBEDDED_ID, FEATURES, SCHEMA_VERSION, SPLIT, RunData, data_file, model_id, rows_per_config

TAGS = ["interpretability", "sparse-autoencoder", "auto-interp", "explanations"]
SIZES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
]


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for ``rows`` rows."""
    return next((label for limit, label in SIZES if rows < limit), "n>10M")


def card_data(run: RunData, *, license: str = "cc-by-4.0") -> DatasetCardData:
    """The card's YAML metadata: license, tags, sizes, configs, features, and the run's model and coders."""
    counts = rows_per_config(run)
    rows = sum(counts.values())
    data = DatasetCardData(
        license=license,
        pretty_name=f"interp explanations of {model_id(run.config.model)}",
        tags=TAGS,
        size_categories=[size_category(rows)],
        interp={
            "schema_version": SCHEMA_VERSION,
            "subject_model": model_id(run.config.model),
            "coders": [
                {"config": name, **{k: run.coders[name][k] for k in ("kind", "source", "hookpoint", "num_latents")}}
                for name in counts
            ],
        },
    )
    configs = {name: {"data_files": [{"split": SPLIT, "path": data_file(name)}]} for name in counts}
    first = next(iter(configs))
    configs[first]["default"] = True
    MetadataConfigs(configs).to_dataset_card_data(data)
    infos = {
        name: DatasetInfo(
            features=FEATURES, config_name=name, splits=SplitDict({SPLIT: SplitInfo(SPLIT, num_examples=n)})
        )
        for name, n in counts.items()
    }
    DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _scorer_setting(name: str, run: RunData) -> str:
    """How scorer ``name`` judged the explanations, in words."""
    cfg = run.config
    base = name.removesuffix("-logprob")
    if base == "embedding":
        return f"cosine similarity of explanation and text with `{cfg.score.embedder or 'all-MiniLM-L6-v2'}`; AUROC."
    if base == "surprisal":
        return "the subject model's loss on each text after the explanation, against a neutral prefix; AUROC."
    if base == "intervention":
        return (
            "steers the latent until the next-token distribution moves by a target KL, then asks how much more "
            "likely the explanation is after steered continuations than after clean ones; AUROC."
        )
    llm = f"LLM `{cfg.explain.llm_model or cfg.explain.llm}`"
    if base == "simulation":
        return (
            f"{llm} predicts each token's activation (0-10) from the explanation; "
            "correlation with the true activations."
        )
    if base == "intruder":
        how = "log-probs of the answer" if name.endswith("-logprob") else "parsed replies"
        return f"{llm} finds the non-activating text among {cfg.score.texts_per_prompt} ({how}); accuracy."
    if name.endswith("-logprob"):
        return f'{llm}, log P("1") - log P("0") of the first reply token, one text per forward pass; AUROC.'
    return f"{llm}, {cfg.score.texts_per_prompt} texts per prompt, a parsed list of 0/1; balanced accuracy."


def _made_with(run: RunData) -> str:
    cfg = run.config
    model = model_id(cfg.model)
    note = (
        " (the embedded Q4_1 GGUF build, de-quantized to float32)"
        if model == EMBEDDED_ID and cfg.model.model == "embedded"
        else ""
    )
    quant = f", {cfg.model.quantization} quantization" if cfg.model.quantization != "none" else ""
    tokens = next(iter(run.stats.values()), {}).get("num_tokens", cfg.corpus.num_tokens)
    corpus = cfg.corpus.corpus + (f" ({cfg.corpus.corpus_config})" if cfg.corpus.corpus_config else "")
    lines = [
        "## How it was made",
        "",
        "Made with `interp` (cache -> records -> explain -> score) from one run directory.",
        "",
        f"* **Subject model**: `{model}`{note}{quant}.",
        f"* **Corpus**: `{corpus}`, split `{cfg.corpus.corpus_split}`, {tokens:,} tokens cached in windows of "
        f"{cfg.corpus.ctx_len} tokens (documents shuffled with seed {cfg.corpus.shuffle_seed}).",
        "",
        "| config | coder kind | source | hookpoint | latents | mean L0 | dead latents |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, coder in run.coders.items():
        stats = run.stats[name]
        lines.append(
            f"| `{name}` | {coder['kind']} | `{coder['source']}` | `{coder['hookpoint']}` | {coder['num_latents']:,} "
            f"| {stats['mean_l0']:.1f} | {100 * stats['dead_fraction']:.1f}% |"
        )
    sae = run.summary.get("default_sae")
    if sae:
        lines += [
            "",
            f"The default SAE was trained by the run itself: held-out FVU {sae['heldout_fvu']:.3f}, "
            f"{100 * sae['heldout_dead_fraction']:.1f}% dead latents.",
        ]
    r = cfg.records
    lines += [
        "",
        f"* **Records**: examples of {r.example_len} tokens; the explainer saw {r.n_train} activating examples "
        f"({r.train_sampling}); scorers saw {r.n_test} other activating examples over {r.n_quantiles} activation "
        f"quantiles, {r.n_negatives} random non-activating and {r.n_hard_negatives} hard negative examples. "
        f"Latents with fewer than {r.min_examples} activating examples are `rare` and not explained; "
        f"activations on BOS {'are ignored' if r.skip_bos else 'are kept'}.",
    ]
    for name, counts in run.explainers.items():
        by = ", ".join(f"`{m}`" for m in run.llms.get(name, ())) or "no LLM (the most frequent firing tokens)"
        status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        lines.append(f"* **Explainer `{name}`**: {by}; {status}. It saw {_seen(name, cfg)}.")
        if run.leaked.get(name):
            lines.append(
                f"  * {run.leaked[name]} of these explanations were made with an earlier version's prompts, which "
                "held examples or steering prompts their scorers score: their scores are optimistic."
            )
    lines += _searches(run)
    scorers = sorted({scorer for summary in run.scores.values() for by in summary.values() for scorer in by})
    if scorers:
        lines.append(
            "* **Scorers** (settings of the run's last `interp score`), each also scoring a random explanation "
            "(another latent's) on the same examples:"
        )
        lines += [f"  * `{name}`: {_scorer_setting(name, run)}" for name in scorers]
    return "\n".join(lines)


def _seen(explainer: str, cfg) -> str:
    """What ``explainer`` was shown, with the run's numbers: never an example or a prompt that is scored."""
    said = EXPLAINER_SEES.get(explainer, "its own view of each latent")
    if explainer == "contrastive":
        said += f" ({cfg.records.n_contrast_negatives} a latent)"
    if explainer == "intervention":
        n = cfg.intervene.num_steer_prompts
        said += f" (prompts {n + 1}-{2 * n} of the pool; the scorer's are 1-{n})"
    return said


def _searches(run: RunData) -> list[str]:
    """One line per search setting the run's explanations were made with, and how its choosing was kept honest."""
    r = run.config.records
    lines = []
    for (explainer, settings), n in sorted(run.searches.items()):
        s = json.loads(settings)
        rounds = f", then {s['rounds']} refinement rounds of {s['candidates']} each" if s["search"] == "refine" else ""
        tokens = " plus the firing-token list" if s["tokens_candidate"] else ""
        lines.append(
            f"* **Search `{s['search']}`** ({n} latents of explainer `{explainer}`): K = {s['candidates']} candidates"
            f"{tokens} (sampled at temperature {s['temperature']}){rounds}, judged by the `{s['judge']}` scorer on "
            f"each latent's validation split ({r.n_valid} activating, {r.n_valid_negatives} random and "
            f"{r.n_valid_hard_negatives} hard negative examples, disjoint from the explainer's and the scorers'). "
            "The validation split chose the explanation; the scores below are on the test split, which no "
            "candidate's choosing saw, so they are not a maximum over candidates. Every candidate is in the "
            "`candidates` column with its validation score."
        )
    return lines


def _scores(run: RunData) -> str:
    lines = ["## Scores", ""]
    left_out = sum(n["replaced"] + n["withdrawn"] for n in run.left_out.values())
    said = (
        [f"{left_out} older score lines, of explanations since replaced or flagged, are left out."] if left_out else []
    )
    if not run.scores:
        return "\n".join([*lines, "This run has no scores of its current explanations yet.", *said])
    lines += [
        "Mean over latents of each scorer's main metric; the random explanation is another latent's explanation "
        "scored on the same examples. The margin is what the explanations are worth: the mean, over the latents "
        "scored both ways (its n), of each latent's explanation's score minus its random explanation's.",
        "",
        "| config | explainer | scorer | metric | explanation | random explanation | margin (paired) | n (paired) "
        "| latents |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for explainer, summary in sorted(run.scores.items()):
        for coder, scorers in summary.items():
            for scorer, e in scorers.items():
                lines.append(
                    f"| `{coder}` | {explainer} | {scorer} | {e['metric']} | {_fmt(e['explanation']['mean'])} "
                    f"| {_fmt(e['baseline']['mean'])} | {_fmt(e['margin'])} | {e['margin_n']} "
                    f"| {e['explanation']['n']} |"
                )
    lines += ["", *said] if said else []
    return "\n".join(lines)


def _loading(repo_id: str, counts: dict[str, int]) -> str:
    first = next(iter(counts))
    configs = "\n".join(f"| `{name}` | {n:,} |" for name, n in counts.items())
    return f"""## Loading

One config per coder, one row per latent:

| config | rows |
| --- | --- |
{configs}

```python
from datasets import load_dataset

rows = load_dataset("{repo_id}", "{first}", split="train")
print(rows[0]["explanation"], rows[0]["scores"])
```

With interp installed, `publish.published.load_published("{repo_id}")` returns every config at once.

## Schema (`{SCHEMA_VERSION}`)

* `model`, `hookpoint`, `coder`, `coder_kind`, `coder_source`, `latent`: which latent this is.
* `status`: `ok`, `dead` (never fired) or `rare` (too few examples to explain).
* `explanation`, `explainer`: the run's main explanation; `explanations`: every explainer's, with its
  `status` (ok, flagged, failed, ...) and the `llm` that wrote it.
* `scores`: per scorer and explainer, the main `metric`, its `value`, the random explanation's
  `baseline_value` and text, all `metrics` (accuracy, balanced accuracy, precision, recall, F1, AUROC, ...)
  and any `other_metrics` as JSON.
* `count`, `frequency`, `max_activation`, `mean_activation`, `num_examples`: firing statistics over the corpus.
* `top_examples`: the strongest examples, with `tokens` (one string per token), `token_ids` and `activations`.
* `promoted_tokens`, `suppressed_tokens`: the tokens the latent's decoder direction raises and lowers most
  through the final norm and unembedding (empty when the coder does not write to the residual stream).
* `search`: how a search chose the explanation (`search` mode, `judge` scorer and its `metric`, K `candidates`,
  `rounds`, `temperature`, `tokens_candidate`, the chosen one's `validation_score` over `validation_examples`);
  null when no search did. `candidates`: every candidate (`text`, validation `score`, `round`, `status`,
  `source`, `chosen`); empty without a search."""


LIMITATIONS = """## Limitations

* An explanation is one LLM's reading of a few dozen examples from one corpus; it can be wrong, too broad or too
  narrow. Trust the scores, and read the top examples, before relying on one.
* Scores measure how well an explanation predicts held-out activations *on this corpus*, with these scorers; a
  small corpus gives few test examples per latent, so per-latent scores are noisy. Compare with the random
  explanation's column, not with zero.
* Statistics come from the cached tokens only; BOS activations are left out when the run ignored them.
* Tokens are decoded one at a time, so multi-byte characters may show as replacement characters.
* Dead and rare latents are listed with their status but have no explanation."""


def make_card(run: RunData, *, repo_id: str, license: str = "cc-by-4.0") -> str:
    """The full README.md: YAML metadata, then how the data was made, scores, loading, schema and limitations.

    It describes the whole run (every explained latent), whatever part of it has been built into rows.
    """
    data = card_data(run, license=license)
    counts = rows_per_config(run)
    intro = (
        f"# {data.pretty_name}\n\nExplanations of {sum(counts.values()):,} latents of {len(counts)} sparse "
        f"coder{'s' if len(counts) > 1 else ''} of `{model_id(run.config.model)}`, each with its scores, firing "
        "statistics, top examples and promoted tokens, so they can be used without re-running anything."
    )
    body = "\n\n".join([intro, _made_with(run), _scores(run), _loading(repo_id, counts), LIMITATIONS])
    return f"---\n{data.to_yaml()}\n---\n\n{body}\n"
