"""interp: automated interpretability of sparse features in language models.

The pipeline runs one way: corpus -> cache -> records -> explain -> score -> publish. The public
API, by module (nothing is imported here, so ``import interp`` stays cheap):

* ``interp.stages`` — the stages over a run directory: ``run_cache``, ``run_explain``, ``run_score``,
  ``summarize_run``, and ``run`` (all of them, the model loaded once);
* ``interp.rundir`` — ``RunDir``, the one owner of a run directory's layout and files;
* ``interp.config`` — ``RunConfig`` and its sections, the settings every stage and the CLI share;
* ``interp.subject`` — ``open_subject``: a run's model and coders, loaded once;
* ``interp.models``, ``interp.coders``, ``interp.corpus``, ``interp.cache``, ``interp.records`` — the
  subject model, sparse coders (``load_coder``), token windows, the latent cache, latent records;
* ``interp.llm`` — LLM clients (``make_client``, ``run_client``); ``interp.explain`` — explainers;
* ``interp.scoring`` — scorers (``registry.make_scorers``), metrics and summaries;
* ``interp.steer`` (the steering hook), ``interp.steer_effects`` (strength calibration, next-token
  effects), ``interp.steer_side_by_side`` (clean vs steered continuations) — steering;
* ``interp.compare``, ``interp.validate``, ``interp.app`` — comparing coders, checking scorers on
  planted latents, the Gradio app; ``publish`` (top level) — the Hub.

>>> from interp.config import RunConfig
>>> from interp.stages import run
>>> summary = run(RunConfig(), "runs/demo")
"""

__version__ = "0.1.0"
