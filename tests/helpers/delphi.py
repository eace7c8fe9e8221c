"""delphi's results folder, written with delphi's own classes and serialization (eai-delphi, installed --no-deps).

delphi's package imports vLLM and faiss on the way to its scorer classes (``delphi.scorers`` imports
its clients, ``delphi.latents`` its FAISS constructor), which cannot be installed here. So the classes
that shape the files are taken from the installed delphi's own source, not retyped: ``Latent`` (whose
``repr`` names the files) and ``ClassifierOutput`` are compiled from their definitions in
``delphi/latents/latents.py`` and ``delphi/scorers/classifier/sample.py``, and the simulation types
module, which imports nothing of delphi, is loaded whole. Files are written as delphi's
``process_cache`` writes them: ``orjson.dumps`` of the explanation string and of each scorer's
``result.score``, at ``explanations/{latent}.txt`` and ``scores/<scorer>/{latent with / as --}.txt``.
"""

import ast
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

DELPHI = Path(importlib.util.find_spec("delphi").submodule_search_locations[0])


def delphi_class(relative: str, name: str) -> type:
    """The class ``name`` as defined in the installed delphi's ``relative`` source file (a dataclass)."""
    tree = ast.parse((DELPHI / relative).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    namespace = {"dataclass": dataclass}
    exec(compile(ast.Module([node], type_ignores=[]), str(DELPHI / relative), "exec"), namespace)
    return namespace[name]


def simulation_types():
    """delphi's ``scorers/simulator/simulation/types.py``, loaded from its file (it imports only numpy and
    simple_parsing)."""
    path = DELPHI / "scorers" / "simulator" / "simulation" / "types.py"
    spec = importlib.util.spec_from_file_location("delphi_simulation_types", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


Latent = delphi_class("latents/latents.py", "Latent")
ClassifierOutput = delphi_class("scorers/classifier/sample.py", "ClassifierOutput")


def write_explanation(root: Path, latent, explanation: str) -> None:
    """As delphi's ``explainer_postprocess``."""
    (root / "explanations").mkdir(parents=True, exist_ok=True)
    with open(root / "explanations" / f"{latent}.txt", "wb") as f:
        f.write(orjson.dumps(explanation))


def write_score(root: Path, scorer: str, latent, score) -> None:
    """As delphi's ``scorer_postprocess``."""
    score_dir = root / "scores" / scorer
    score_dir.mkdir(parents=True, exist_ok=True)
    safe_latent_name = str(latent).replace("/", "--")
    with open(score_dir / f"{safe_latent_name}.txt", "wb") as f:
        f.write(orjson.dumps(score))
