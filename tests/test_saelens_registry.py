"""``saelens:RELEASE/SAE_ID``: SAELens release names resolved through a registry in ``pretrained_saes.yaml``'s schema.

The registries here are small files in SAELens' own schema (releases at the top level, each with
``repo_id``, ``model``, ``conversion_func``, optional ``config_overrides`` and ``saes``), whose
``repo_id`` is a local folder holding SAELens' own golden SAEs (tests/golden/saelens): resolving and
loading are real, and nothing reaches the Hub.
"""

import json
import re
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from interp.cli import main
from interp.coders import CoderSpec, load_coder
from interp.coders.saelens_registry import installed_registry, lookup
from interp.errors import CoderFormatError
from interp.hooks import Site
from tests.helpers.coders import random_dense_weights, write_gemmascope
from tests.helpers.models import save_tiny_model
from tests.test_coders import activations
from tests.test_saelens_golden import GOLDEN, dense_entries, entries

RELEASE = "tiny-llama-res-test"
NEURONPEDIA = "tiny-llama/2-res-test"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_cpu_thread):
    """Tiny tensors: one intra-op thread is fastest on a busy CPU."""


def registry(tmp_path, releases: dict, *, legacy: bool = False):
    """``releases`` written as SAELens writes its registry (before SAELens 4, under ``SAE_LOOKUP``)."""
    path = tmp_path / "pretrained_saes.yaml"
    path.write_text(yaml.safe_dump({"SAE_LOOKUP": releases} if legacy else releases))
    return path


def release(saes: list[dict], **extra) -> dict:
    return {"repo_id": str(GOLDEN), "model": "tiny-llama", "conversion_func": None, "saes": saes, **extra}


STANDARD = {"id": "blocks.2.hook_resid_post", "path": "standard", "neuronpedia": NEURONPEDIA, "l0": 12.0}


def load(spec: str, lm, path):
    return load_coder(CoderSpec.parse(spec), lm.model, saelens_registry=str(path))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_release_name_loads_the_sae_its_registry_points_to_and_records_its_neuronpedia_id(tiny_lm, tmp_path, legacy):
    path = registry(tmp_path, {RELEASE: release([STANDARD])}, legacy=legacy)
    coder = load(f"saelens:{RELEASE}/blocks.2.hook_resid_post", tiny_lm, path)

    assert coder.site == Site("model.layers.2", "output")
    ref = load_file(GOLDEN / "standard" / "inputs.safetensors")
    assert entries(coder.encode(ref["inputs"])) == pytest.approx(dense_entries(ref["encoded"]), rel=1e-5, abs=1e-5)
    described = coder.describe()
    assert described["source"] == f"{RELEASE}/blocks.2.hook_resid_post"
    assert described["neuronpedia"] == NEURONPEDIA
    assert (described["repo_id"], described["path"]) == (str(GOLDEN), "standard")


def test_config_overrides_are_set_over_the_saes_own_config_as_saelens_does(tiny_lm, tmp_path):
    path = registry(tmp_path, {RELEASE: release([STANDARD], config_overrides={"normalize_activations": "layer_norm"})})
    with pytest.raises(CoderFormatError, match="normalize_activations='layer_norm'"):
        load(f"saelens:{RELEASE}/blocks.2.hook_resid_post", tiny_lm, path)


def test_a_registered_norm_scaling_factor_scales_the_inputs_as_saelens_from_pretrained_folds_it(tiny_lm, tmp_path):
    """``expected_average_without_scaler`` is refused from its folder (no scaling factor beside it); the
    registry's ``norm_scaling_factor`` supplies it, and encoding x then equals encoding factor·x unscaled."""
    scaled = {"id": "scaled", "path": "expected_average_without_scaler", "norm_scaling_factor": 2.5}
    plain = {"id": "plain", "path": "expected_average_without_scaler"}
    path = registry(
        tmp_path,
        {
            RELEASE: release([scaled]),
            "unscaled": release([plain], config_overrides={"normalize_activations": "none"}),
        },
    )
    with pytest.raises(CoderFormatError, match="activation_scaler.json"):
        load_coder(CoderSpec.parse(f"saelens:{GOLDEN / 'expected_average_without_scaler'}"), tiny_lm.model)
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    with_factor = load(f"saelens:{RELEASE}/scaled", tiny_lm, path).encode(x)
    reference = load("saelens:unscaled/plain", tiny_lm, path).encode(2.5 * x)
    assert len(entries(reference)) > 0
    assert entries(with_factor) == pytest.approx(entries(reference), rel=1e-5, abs=1e-6)


def test_gemma_scope_releases_load_with_the_gemma_scope_reader(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    repo = tmp_path / "google" / "gemma-scope-2b-pt-res"
    write_gemmascope(repo / "layer_2" / "width_16k" / "average_l0_10", random_dense_weights(x, threshold=True))
    sae = {"id": "layer_2/width_16k/canonical", "path": "layer_2/width_16k/average_l0_10", "neuronpedia": "g/2-res"}
    path = registry(
        tmp_path, {"gemma-scope-2b-pt-res-canonical": release([sae], repo_id=str(repo), conversion_func="gemma_2")}
    )
    coder = load("saelens:gemma-scope-2b-pt-res-canonical/layer_2/width_16k/canonical", tiny_lm, path)
    assert (coder.kind, coder.site) == ("gemmascope", Site("model.layers.2", "output"))
    assert coder.describe()["neuronpedia"] == "g/2-res"
    direct = load_coder(CoderSpec.parse(f"gemmascope:{repo}/layer_2/width_16k/average_l0_10"), tiny_lm.model)
    torch.testing.assert_close(coder.encode(x).acts, direct.encode(x).acts)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (f"{RELEASE[:-1]}/blocks.2.hook_resid_post", rf"No SAELens release '{RELEASE[:-1]}' .*closest: {RELEASE}"),
        (
            f"{RELEASE}/blocks.2.hook_resid_pots",
            r"No SAE 'blocks.2.hook_resid_pots' .*closest: blocks.2.hook_resid_post",
        ),
        (RELEASE, rf"release '{RELEASE}' needs an SAE id: saelens:{RELEASE}/SAE_ID .*blocks.2.hook_resid_post"),
        ("no-such-thing", r"No SAELens release 'no-such-thing'"),
        ("converted/x", r"'dictionary_learning_1' converter, which interp does not reimplement"),
    ],
)
def test_unknown_names_and_converters_are_one_line_naming_the_closest(tiny_lm, tmp_path, spec, expected):
    path = registry(
        tmp_path,
        {
            RELEASE: release([STANDARD]),
            "converted": release([{"id": "x", "path": "standard"}], conversion_func="dictionary_learning_1"),
        },
    )
    with pytest.raises(CoderFormatError) as error:
        load(f"saelens:{spec}", tiny_lm, path)
    assert "\n" not in str(error.value)
    assert re.search(expected, str(error.value)), str(error.value)


def test_local_folders_and_hub_ids_are_not_taken_for_release_names(tmp_path):
    path = registry(tmp_path, {RELEASE: release([STANDARD])})
    assert lookup(str(GOLDEN / "standard"), path) is None
    assert lookup("EleutherAI/sae-llama-3-8b-32x/layers.10", path) is None


@pytest.mark.parametrize("bad", ["saes: [unclosed", "- a list\n- of things\n", "rel:\n  repo_id: x\n"])
def test_a_registry_that_is_not_one_says_so_in_one_line(tmp_path, bad):
    path = tmp_path / "pretrained_saes.yaml"
    path.write_text(bad)
    with pytest.raises(CoderFormatError) as error:
        lookup(f"{RELEASE}/x", path)
    assert "\n" not in str(error.value)
    assert str(path) in str(error.value)


def test_the_installed_sae_lens_registry_is_found_without_importing_sae_lens(tiny_lm, tmp_path, monkeypatch):
    """A package folder named sae_lens whose import would fail: its registry is still found and read."""
    package = tmp_path / "site" / "sae_lens"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('sae_lens must not be imported')\n")
    registry(package, {RELEASE: release([STANDARD])})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert installed_registry() == package / "pretrained_saes.yaml"
    coder = load_coder(CoderSpec.parse(f"saelens:{RELEASE}/blocks.2.hook_resid_post"), tiny_lm.model)
    assert coder.describe()["neuronpedia"] == NEURONPEDIA
    assert "sae_lens" not in sys.modules


@pytest.mark.slow
def test_the_cli_caches_a_release_name_given_with_its_registry(tmp_path, smollm_tokenizer, capsys):
    model = save_tiny_model(tmp_path / "model", smollm_tokenizer)
    path = registry(tmp_path, {RELEASE: release([STANDARD])})
    common = ["--model", str(model), "--saelens-registry", str(path), "--quiet"]
    common += "--num-tokens 256 --ctx-len 32 --shard-windows 8 --batch-size 8".split()
    assert (
        main(["cache", str(tmp_path / "run"), "--coders", f"saelens:{RELEASE}/blocks.2.hook_resid_post", *common]) == 0
    )
    described = json.loads((tmp_path / "run" / "cache" / "model.layers.2" / "coder.json").read_text())
    assert (described["source"], described["neuronpedia"]) == (f"{RELEASE}/blocks.2.hook_resid_post", NEURONPEDIA)

    capsys.readouterr()
    assert main(["cache", str(tmp_path / "other"), "--coders", f"saelens:{RELEASE}/blocks.2", *common]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "closest: blocks.2.hook_resid_post" in err
