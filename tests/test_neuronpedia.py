"""Neuronpedia upload batches: a real run (and a delphi results folder) written as upload-batch bodies, every
constraint of the route checked before writing, and ``--push`` against a local service on 127.0.0.1 that
enforces the same constraints (``tests.helpers.neuronpedia_server``), with retries and resuming.

The real neuronpedia.org was not reachable from here: what was checked is the route's own schema and checks,
read from hijohnnylin/neuronpedia's ``apps/webapp/app/api/feature/upload-batch/route.tsx``.
"""

import json
import re
import urllib.error
import urllib.request

import pytest
import yaml

from interp.cli import main
from interp.rundir import RunDir
from publish.neuronpedia import MAX_FEATURES, NeuronpediaError, batch_name, check_batch, write_batches
from publish.neuronpedia_push import PUSHED_FILE, push_batches
from tests.helpers.models import save_tiny_model
from tests.helpers.neuronpedia_server import FakeNeuronpedia, serving
from tests.test_delphi_results import results  # noqa: F401  (the delphi folder fixture)
from tests.test_saelens_golden import GOLDEN

KEY = "np-INTERPFAKE-key-0123456789abcdef"
SOURCE = "2-res-test"
CODER = "model.layers.2"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, smollm_tokenizer):
    """A tiny run whose coder comes from a SAELens release with a Neuronpedia id; token-list explanations."""
    root = tmp_path_factory.mktemp("np")
    model = save_tiny_model(root / "model", smollm_tokenizer)
    registry = root / "pretrained_saes.yaml"
    sae = {"id": "blocks.2.hook_resid_post", "path": "standard", "neuronpedia": f"tiny-llama/{SOURCE}"}
    registry.write_text(yaml.safe_dump({"tiny": {"repo_id": str(GOLDEN), "model": "tiny", "saes": [sae]}}))
    run = root / "run"
    common = ["--quiet", "--num-tokens", "2048", "--ctx-len", "32", "--shard-windows", "16", "--batch-size", "8"]
    coder = ["--coders", "saelens:tiny/blocks.2.hook_resid_post", "--saelens-registry", str(registry)]
    assert main(["cache", str(run), "--model", str(model), *coder, *common]) == 0
    assert main(["explain", str(run), "--explainer", "tokens", "--latents", "all", "--quiet"]) == 0
    return run


@pytest.fixture
def service():
    service = FakeNeuronpedia(KEY, owned={("tiny-llama", SOURCE), ("pythia-70m", "3-res-mine"), ("m", "s")})
    server = serving(service)
    yield service
    server.shutdown()
    server.server_close()


def read_batches(out):
    return {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in sorted(out.glob("*/batch-*.json"))}


def test_a_run_becomes_upload_batches_that_the_service_accepts(run_dir, tmp_path, service, monkeypatch, capsys):
    out = tmp_path / "np"
    args = ["publish", str(run_dir), "--neuronpedia", str(out), "--np-name", "tokens=np_acts-logits-general"]
    assert main(args) == 0
    batches = read_batches(out)
    assert list(batches) == [f"{SOURCE}/{batch_name(0)}"]  # the coder's own Neuronpedia id names the target
    body = batches[f"{SOURCE}/{batch_name(0)}"]
    assert (body["modelId"], body["source"]) == ("tiny-llama", SOURCE)
    check_batch(body)

    run = RunDir(run_dir)
    explained = {r["latent"]: r for r in run.explanations() if r["status"] == "ok"}
    features = {f["index"]: f for f in body["features"]}
    assert features and set(features) <= set(explained)
    some = features[min(features)]
    assert 0 < some["density"] <= 1
    assert some["explanations"] == [
        {"text": explained[some["index"]]["explanation"], "methodName": "np_acts-logits-general", "modelName": None}
    ]
    assert 0 < len(some["topLogits"]) <= 20 and 0 < len(some["bottomLogits"]) <= 20
    top = [a for a in some["activations"] if "quantileMin" not in a]
    quantiled = [a for a in some["activations"] if "quantileMin" in a]
    assert top and quantiled
    for a in quantiled:  # each example's peak lies inside its quantile's bounds
        assert a["quantileMin"] <= max(a["values"]) <= a["quantileMax"] and 0 < a["quantileFraction"] <= 1
    assert all(len(a["tokens"]) == len(a["values"]) for a in some["activations"])

    monkeypatch.setenv("NEURONPEDIA_API_KEY", KEY)
    capsys.readouterr()
    assert main([*args, "--push", "--np-url", service.url]) == 0
    assert "posted 1 batches" in capsys.readouterr().out
    assert set(service.features) == {("tiny-llama", SOURCE, i) for i in features}
    assert all(r.headers["x-api-key"] == KEY for r in service.requests)

    # without the name map, the service does not know the method "tokens": one line, nothing half-done
    assert main(["publish", str(run_dir), "--neuronpedia", str(tmp_path / "raw"), "--quiet"]) == 0
    service.features.clear()
    with pytest.raises(NeuronpediaError, match="Invalid Explanation Method Names: tokens") as error:
        push_batches(tmp_path / "raw", url=service.url, retries=1, backoff=0.01)
    assert "\n" not in str(error.value) and not service.features


def feature(index: int, **changes) -> dict:
    base = {
        "index": index,
        "density": 0.01,
        "topLogits": [{"token": " river", "value": 1.5}],
        "bottomLogits": [{"token": " dry", "value": -1.0}],
        "explanations": [{"text": "Rivers", "methodName": "np_acts-logits-general", "modelName": "gpt-4o-mini"}],
        "activations": [{"tokens": [" the", " river"], "values": [0.0, 2.0]}],
    }
    return {**base, **changes}


def test_batches_hold_at_most_128_features_and_pushing_retries_and_resumes(tmp_path, service, monkeypatch):
    out = tmp_path / "np"
    written = write_batches({"c": ({}, [feature(i) for i in range(300)])}, out, model_id="M", source="S")
    assert written == {"s": 300}
    batches = read_batches(out)
    assert [len(b["features"]) for b in batches.values()] == [MAX_FEATURES, MAX_FEATURES, 300 - 2 * MAX_FEATURES]
    assert all((b["modelId"], b["source"]) == ("m", "s") for b in batches.values())

    monkeypatch.setenv("NEURONPEDIA_API_KEY", KEY)
    service.fail_first = [503, 429]  # an outage, then a rate limit: both retried
    service.down_after = 1  # then the service goes down after the first batch
    with pytest.raises(NeuronpediaError, match=r"s/batch-00001\.json \(HTTP 503.*1 batches went up") as error:
        push_batches(out, url=service.url, retries=2, backoff=0.01)
    assert "\n" not in str(error.value)
    assert len(service.features) == MAX_FEATURES
    assert list(json.loads((out / PUSHED_FILE).read_text())) == [f"s/{batch_name(0)}"]

    service.down_after = None
    sent = len(service.requests)
    assert push_batches(out, url=service.url, backoff=0.01) == {"pushed": 2, "skipped": 1}
    assert len(service.requests) == sent + 2  # the first batch was not sent again
    assert set(service.features) == {("m", "s", i) for i in range(300)}
    assert push_batches(out, url=service.url) == {"pushed": 0, "skipped": 3}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"topLogits": [{"token": "a", "value": 1.0}] * 21}, "feature 3: topLogits has 21 tokens; at most 20"),
        ({"bottomLogits": [{"token": "", "value": 1.0}]}, r"feature 3: bottomLogits\[0\].token is empty"),
        ({"explanations": [{"text": "x" * 513}]}, r"feature 3: explanations\[0\].text has 513 characters; 1 to 512"),
        ({"explanations": [{"text": ""}]}, r"explanations\[0\].text has 0 characters"),
        (
            {"activations": [{"tokens": ["a", "b"], "values": [1.0]}]},
            r"activations\[0\].tokens has 2 tokens but 1 values",
        ),
        ({"activations": []}, "feature 3: activations is empty"),
        ({"activations": [{"tokens": ["a"], "values": [1.0], "quantileFraction": 1.5}]}, "quantileFraction is 1.5"),
        ({"density": 1.2}, "feature 3: density is 1.2; 0 to 1"),
        ({"index": -1}, "feature -1: index is -1"),
    ],
)
def test_every_constraint_is_checked_before_writing_in_one_line(tmp_path, changes, expected):
    out = tmp_path / "np"
    with pytest.raises(NeuronpediaError) as error:
        write_batches({"c": ({}, [feature(1), {**feature(3), **changes}])}, out, model_id="m", source="s")
    message = str(error.value)
    assert "\n" not in message and "source 's'" in message
    assert re.search(expected, message), message
    assert not out.exists()  # nothing written


def test_the_local_service_refuses_what_the_checks_refuse(service):
    """The checks mirror the service: a body that skips them is refused there too."""
    body = {"modelId": "m", "source": "s", "features": [feature(1, explanations=[{"text": "x" * 513}])]}
    request = urllib.request.Request(
        service.url + "/api/feature/upload-batch",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"X-Api-Key": KEY, "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request)
    assert error.value.code == 400
    assert json.loads(error.value.read())["path"] == "features[0].explanations[0].text"


def test_a_missing_or_wrong_key_is_one_line_that_never_shows_it(tmp_path, service, monkeypatch):
    out = tmp_path / "np"
    write_batches({"c": ({}, [feature(1)])}, out, model_id="m", source="s")
    monkeypatch.delenv("NEURONPEDIA_API_KEY", raising=False)
    with pytest.raises(NeuronpediaError, match=r"needs a Neuronpedia API key in \$NEURONPEDIA_API_KEY"):
        push_batches(out, url=service.url)
    wrong = "np-INTERPFAKE-wrong-key-987654321"
    monkeypatch.setenv("NEURONPEDIA_API_KEY", wrong)
    service.echo_key = True  # a careless service echoes the key it got
    with pytest.raises(NeuronpediaError, match="HTTP 401") as error:
        push_batches(out, url=service.url, backoff=0.01)
    assert wrong not in str(error.value) and "***" in str(error.value)
    assert len(service.requests) == 1  # a refusal is not retried
    assert not (out / PUSHED_FILE).exists()


def test_bad_publish_arguments_are_one_line(run_dir, tmp_path, capsys):
    code = main(
        ["publish", str(run_dir), "--neuronpedia", str(tmp_path / "np"), "--np-source", "x", "--np-coder", "no"]
    )
    assert code == 2 and "No coder 'no' to upload" in capsys.readouterr().err
    assert main(["publish", str(run_dir)]) == 2
    assert "--neuronpedia OUT_DIR" in capsys.readouterr().err


def test_a_delphi_results_folder_becomes_upload_batches(results, tmp_path, service, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "np"
    args = ["publish", str(results), "--neuronpedia", str(out), "--np-model", "m", "--np-source", "s"]
    assert main(args) == 2  # two modules, one --np-source
    assert "several coders" in capsys.readouterr().err
    assert main(["publish", str(results), "--neuronpedia", str(out), "--np-coder", "layers.3"]) == 2
    assert "Coder 'layers.3' has no Neuronpedia id: give --np-model and --np-source" in capsys.readouterr().err
    assert main([*args, "--np-coder", "layers.3", "--np-name", "delphi=oai_token-act-pair"]) == 0
    (body,) = read_batches(out).values()
    (only,) = body["features"]  # latent 7 has only simulation scores: no classifier examples to show
    assert only["index"] == 0
    assert only["explanations"][0]["text"] == "River banks and water"
    assert only["explanations"][0]["methodName"] == "oai_token-act-pair"
    assert {max(a["values"]) for a in only["activations"]} == {1.0, 2.5, 5.0}  # the three activating examples
    assert all(a["quantileMin"] <= max(a["values"]) <= a["quantileMax"] for a in only["activations"])
    monkeypatch.setenv("NEURONPEDIA_API_KEY", KEY)
    service.models.add("hugging-quants/meta-llama-3.1-70b-instruct-awq-int4")
    assert push_batches(out, url=service.url) == {"pushed": 1, "skipped": 0}
    assert set(service.features) == {("m", "s", 0)}
