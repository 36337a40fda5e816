"""Model names and aliases: what `Catalog` resolves, what CARPOOL_MODEL_ALIASES configures, and
what /predict, /predict/trained, /predict/batch and v2 answer for an alias."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving import app as app_module
from serving import errors
from serving.catalog import Catalog
from serving.pool import ModelPool
from serving.settings import ServerSettings
from tests.serving.conftest import serve_app, tiny_settings

pytestmark = [pytest.mark.unit]

SERVED = Catalog({"minilm": "base", "minilm_trained": "trained", "spam": "base"})
GUIDE = {"bert-base": "minilm", "bert-base_trained": "minilm_trained"}


def test_an_alias_resolves_to_its_model_and_each_model_runs_once() -> None:
    catalog = SERVED.with_aliases(GUIDE)
    assert catalog.requested(["bert-base", "spam"]) == {"bert-base": "minilm", "spam": "spam"}
    assert catalog.resolve(["bert-base", "minilm", "bert-base"]) == ["minilm"]
    assert catalog.requested(["bert-base_trained"], trained_only=True) == {
        "bert-base_trained": "minilm_trained"
    }
    assert catalog.requested(None) == {"minilm": "minilm", "spam": "spam"}  # defaults: own names


def test_unknown_names_list_the_aliases_too() -> None:
    catalog = SERVED.with_aliases(GUIDE)
    with pytest.raises(errors.UnknownModel) as caught:
        catalog.resolve(["bert-large"])
    assert caught.value.extra["known_models"] == [
        "minilm",
        "minilm_trained",
        "spam",
        "bert-base",
        "bert-base_trained",
    ]
    assert "bert-base (alias of minilm)" in caught.value.message


def test_an_alias_of_a_base_model_is_refused_by_the_trained_endpoint() -> None:
    catalog = SERVED.with_aliases(GUIDE)
    with pytest.raises(errors.NotATrainedModel) as caught:
        catalog.resolve(["bert-base"], trained_only=True)
    assert caught.value.extra["trained_models"] == ["minilm_trained", "bert-base_trained"]


@pytest.mark.parametrize(
    ("kinds", "kept"),
    [
        pytest.param({"minilm": "base"}, {"bert-base": "minilm"}, id="untrained-default"),
        pytest.param({"bert-base": "base", "minilm": "base"}, {}, id="served-name-wins"),
        pytest.param({"phishing": "base"}, {}, id="default-not-served"),
    ],
)
def test_aliases_a_pod_cannot_take_are_dropped(kinds: dict[str, str], kept: dict[str, str]) -> None:
    catalog = Catalog(kinds).with_aliases(GUIDE)  # type: ignore[arg-type]
    assert dict(catalog.aliases) == kept


@pytest.mark.parametrize(
    ("environ", "aliases"),
    [
        pytest.param({}, GUIDE, id="default-the-guides-names"),
        pytest.param({"CARPOOL_MODEL_ALIASES": ""}, {}, id="empty-none"),
        pytest.param(
            {"CARPOOL_MODEL_ALIASES": " clf = phishing ,bert-base=minilm,"},
            {"clf": "phishing", "bert-base": "minilm"},
            id="configured",
        ),
    ],
)
def test_aliases_come_from_the_environment(environ: dict[str, str], aliases: dict[str, str]) -> None:
    assert ServerSettings.from_env(environ).model_aliases == aliases


@pytest.mark.parametrize("raw", ["bert-base", "=minilm", "a=", "x=x"])
def test_a_bad_alias_list_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match="CARPOOL_MODEL_ALIASES"):
        ServerSettings.from_env({"CARPOOL_MODEL_ALIASES": raw})


@pytest.mark.asyncio(loop_scope="function")
async def test_the_endpoints_answer_an_alias_under_the_alias(tiny_models_dir: Path) -> None:
    aliases = {"bert-base": "tiny", "bert-base_trained": "tiny_trained"}

    def alias(pool: ModelPool) -> None:
        app_module.add_aliases(pool, aliases)

    async with serve_app(tiny_settings(tiny_models_dir), alias) as pod:
        client = pod.client
        both = await client.post("/predict", json={"text": "Test message", "models": ["bert-base", "tiny"]})
        assert both.status_code == 200, both.text
        predictions = both.json()["predictions"]
        assert list(predictions) == ["bert-base", "tiny"]
        assert predictions["bert-base"]["probabilities"] == predictions["tiny"]["probabilities"]

        trained = await client.post(
            "/predict/trained", json={"text": "Test message", "models": ["bert-base_trained"]}
        )
        assert trained.status_code == 200 and list(trained.json()["predictions"]) == ["bert-base_trained"]

        batch = await client.post(
            "/predict/batch", json=[{"text": f"Message {i}", "models": ["bert-base"]} for i in (1, 2, 3)]
        )
        assert batch.status_code == 200 and batch.json()["ok"] is True
        assert [list(r["predictions"]) for r in batch.json()["results"]] == [["bert-base"]] * 3

        unknown = await client.post("/predict", json={"text": "x", "models": ["bert-large"]})
        assert unknown.status_code == 404
        assert unknown.json()["known_models"] == ["tiny", "tiny_trained", "bert-base", "bert-base_trained"]

        v2 = await client.post(
            "/v2/models/bert-base/infer",
            json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["Test message"]}]},
        )
        assert v2.status_code == 200 and v2.json()["model_name"] == "bert-base", v2.text
        metadata = await client.get("/v2/models/bert-base")
        assert metadata.status_code == 200 and metadata.json()["name"] == "bert-base"
        assert (await client.get("/v2/models/bert-base/ready")).json() == {"name": "bert-base", "ready": True}

        openapi = (await client.get("/openapi.json")).json()
        body = openapi["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert "bert-base" in body["properties"]["models"]["anyOf"][0]["items"]["enum"]

        metrics = (await client.get("/metrics")).text
        assert 'model="tiny",outcome="ok"' in metrics and 'model="bert-base"' not in metrics
