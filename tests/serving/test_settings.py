"""ServerSettings: the pod's defaults, pinned, and the environment variables it reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from serving import settings as settings_module
from serving.settings import ENV_BY_FIELD, KNOBS, BatchingConfig, ServerSettings

pytestmark = pytest.mark.unit


def test_defaults_are_pinned() -> None:
    settings = ServerSettings.from_env({})
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.models == {} and settings.models_dir is None
    assert (settings.device, settings.dtype) == ("auto", "auto")
    assert settings.admin_token is None
    assert (settings.enable_metrics, settings.enable_logging) == (True, True)
    assert (settings.max_text_chars, settings.max_length) == (20_000, 128)
    assert (settings.runtime, settings.model_runtimes, settings.cache_dir) == ("auto", {}, None)
    assert settings.batching == BatchingConfig.model_validate({})
    assert settings.batching.model_dump(mode="json") == {
        "enable": True,
        "strategy": "adaptive",
        "max_batch_size": 32,
        "max_wait_time_ms": 10.0,
        "min_batch_size": 1,
        "max_queue_size": 256,
        "load_threshold": 0.7,
        "latency_threshold_ms": 200.0,
    }


def test_the_environment_configures_the_pod() -> None:
    settings = ServerSettings.from_env(
        {
            "CARPOOL_MODELS": "a=/m/a, b=/m/b",
            "CARPOOL_MODELS_DIR": "/models",
            "CARPOOL_DEVICE": "cuda:1",
            "CARPOOL_DTYPE": "bfloat16",
            "CARPOOL_ADMIN_TOKEN": "s3cret",
            "CARPOOL_MAX_TEXT_CHARS": "500",
            "CARPOOL_MAX_LENGTH": "64",
            "CARPOOL_PORT": "9000",
            "ENABLE_METRICS": "false",
            "ENABLE_LOGGING": "0",
            "BATCHING_STRATEGY": "batch_optimized",
            "MAX_BATCH_SIZE": "16",
        }
    )
    assert settings.models == {"a": Path("/m/a"), "b": Path("/m/b")}
    assert settings.models_dir == Path("/models")
    assert (settings.device, settings.dtype, settings.admin_token) == ("cuda:1", "bfloat16", "s3cret")
    assert (settings.max_text_chars, settings.max_length, settings.port) == (500, 64, 9000)
    assert not settings.enable_metrics and not settings.enable_logging
    assert settings.batching.strategy.value == "batch_optimized" and settings.batching.max_batch_size == 16


def test_runtimes_come_from_the_environment_per_model_over_the_default() -> None:
    settings = ServerSettings.from_env(
        {
            "CARPOOL_RUNTIME": "onnx",
            "CARPOOL_MODEL_RUNTIMES": "minilm=torch, phishing=onnx-int8",
            "CARPOOL_CACHE_DIR": "/var/cache/carpool",
        }
    )
    assert settings.cache_dir == Path("/var/cache/carpool")
    assert settings.runtime_for("minilm") == "torch"
    assert settings.runtime_for("phishing") == "onnx-int8"
    assert settings.runtime_for("spam") == "onnx"


def test_per_model_batching_comes_from_the_environment_over_the_batching_variables() -> None:
    settings = ServerSettings.from_env(
        {
            "MAX_BATCH_SIZE": "16",
            "CARPOOL_MODEL_BATCHING": " phishing : max_batch_size=4 , enable=false ; "
            "spam:strategy=single_request;",
        }
    )
    assert settings.model_batching == {
        "phishing": {"max_batch_size": "4", "enable": "false"},
        "spam": {"strategy": "single_request"},
    }
    phishing = settings.batching.updated(settings.model_batching["phishing"])
    assert (phishing.max_batch_size, phishing.enable, phishing.max_wait_time_ms) == (4, False, 10.0)
    assert ServerSettings.from_env({}).model_batching == {}


def test_per_model_batching_is_written_as_it_is_read() -> None:
    overrides = {"a": {"enable": False, "max_wait_time_ms": 2.5}, "b": {"strategy": "adaptive"}, "c": {}}
    text = settings_module.format_model_batching(overrides)
    assert text == "a:enable=false,max_wait_time_ms=2.5;b:strategy=adaptive"
    base = BatchingConfig.model_validate({})
    read = settings_module.parse_model_batching(text)
    assert {name: base.updated(fields) for name, fields in read.items()} == {
        name: base.updated(fields) for name, fields in overrides.items() if fields
    }


def test_flags_win_over_the_environment() -> None:
    settings = ServerSettings.from_env({"CARPOOL_PORT": "9000"}, port=8123, host=None)
    assert (settings.host, settings.port) == ("0.0.0.0", 8123)


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        pytest.param({"MAX_BATCH_SIZE": "0"}, "MAX_BATCH_SIZE", id="batch-size"),
        pytest.param({"ENABLE_METRICS": "maybe"}, "ENABLE_METRICS must be true or false", id="flag"),
        pytest.param({"CARPOOL_DTYPE": "int8"}, "dtype", id="dtype"),
        pytest.param({"CARPOOL_MODELS": "nopath"}, "NAME=PATH", id="models"),
        pytest.param({"CARPOOL_RUNTIME": "tensorrt"}, "CARPOOL_RUNTIME: .*'tensorrt'", id="runtime"),
        pytest.param(
            {"CARPOOL_MODEL_RUNTIMES": "a=onnx,b=int4"},
            r"CARPOOL_MODEL_RUNTIMES \(b\).*'int4'",
            id="model-runtime",
        ),
        pytest.param({"CARPOOL_MODEL_RUNTIMES": "onnx"}, "NAME=RUNTIME", id="model-runtime-form"),
        pytest.param(
            {"CARPOOL_MODEL_BATCHING": "a:max_batch_size=0"},
            r"CARPOOL_MODEL_BATCHING: a\.max_batch_size: Input should be greater than or equal to 1",
            id="model-batching-bound",
        ),
        pytest.param(
            {"MAX_BATCH_SIZE": "8", "CARPOOL_MODEL_BATCHING": "a:min_batch_size=9"},
            r"a\.min_batch_size \(9\) must be <= a\.max_batch_size \(8\)",
            id="model-batching-min-above-the-pods-max",
        ),
        pytest.param(
            {"CARPOOL_MODEL_BATCHING": "a:batch=4"},
            "unknown batching field 'batch'",
            id="model-batching-field",
        ),
        pytest.param({"CARPOOL_MODEL_BATCHING": "a:max_batch_size"}, "FIELD=VALUE", id="model-batching-item"),
        pytest.param(
            {"CARPOOL_MODEL_BATCHING": "a:enable=false;a:max_batch_size=2"},
            "model 'a' twice",
            id="model-twice",
        ),
    ],
)
def test_a_bad_environment_is_refused_naming_the_variable(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ServerSettings.from_env(environ)


@pytest.mark.parametrize(
    ("environ", "cpus", "workers"),
    [
        pytest.param({}, 2, 1, id="auto-2-cpus"),
        pytest.param({}, 16, 15, id="auto-16-cpus"),
        pytest.param({}, 1, 1, id="auto-1-cpu"),
        pytest.param({"CARPOOL_WORKERS": "4"}, 2, 4, id="set"),
        pytest.param({"CARPOOL_WORKERS": "0"}, 8, 0, id="one-process"),
        pytest.param({"CARPOOL_WORKERS": " AUTO "}, 4, 3, id="auto-spelled-out"),
    ],
)
def test_http_workers_default_to_the_cpus_less_one_for_the_model(
    environ: dict[str, str], cpus: int, workers: int
) -> None:
    assert ServerSettings.from_env(environ).worker_count(cpus) == workers


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_bad_worker_count_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="CARPOOL_WORKERS must be a whole number"):
        ServerSettings.from_env({"CARPOOL_WORKERS": value})


def test_access_logs_are_off_unless_asked_for() -> None:
    assert not ServerSettings.from_env({}).access_log
    assert ServerSettings.from_env({"CARPOOL_ACCESS_LOG": "true"}).access_log


@pytest.mark.parametrize("raw", ["s3cret\n", "  s3cret", "\ts3cret \r\n"])
def test_the_admin_token_is_read_without_surrounding_whitespace(raw: str) -> None:
    assert ServerSettings.from_env({"CARPOOL_ADMIN_TOKEN": raw}).admin_token == "s3cret"


@pytest.mark.parametrize("raw", ["", " ", "\n"])
def test_an_admin_token_set_but_blank_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="CARPOOL_ADMIN_TOKEN is set but blank"):
        ServerSettings.from_env({"CARPOOL_ADMIN_TOKEN": raw})


def test_the_request_timeout_default_is_read_and_checked() -> None:
    assert ServerSettings.from_env({}).request_timeout_ms is None
    assert ServerSettings.from_env({"CARPOOL_REQUEST_TIMEOUT_MS": "1500"}).request_timeout_ms == 1500
    with pytest.raises(ValueError, match="request_timeout_ms"):
        ServerSettings.from_env({"CARPOOL_REQUEST_TIMEOUT_MS": "0"})


# -- the batching knobs: one declaration (a Knob on each BatchingConfig field), read everywhere ----

ROOT = Path(__file__).resolve().parents[2]
KNOB_VALUES = {  # a value other than the default, as a JSON client, the environment and a CR write it
    "enable": (False, "false"),
    "strategy": ("batch_optimized", "batch_optimized"),
    "max_batch_size": (16, "16"),
    "max_wait_time_ms": (2.5, "2.5"),
    "min_batch_size": (4, "4"),
    "max_queue_size": (99, "99"),
    "load_threshold": (0.25, "0.25"),
    "latency_threshold_ms": (75.0, "75"),
}


def test_the_guides_variable_names_are_the_knobs_declared_env_names() -> None:
    assert list(ENV_BY_FIELD.items()) == [(field, knob.env) for field, knob in KNOBS.items()]
    assert list(KNOBS) == list(BatchingConfig.model_fields)
    assert sorted(ENV_BY_FIELD.values()) == sorted(  # DESIGN.md's names: a contract
        [
            "ENABLE_DYNAMIC_BATCHING",
            "BATCHING_STRATEGY",
            "MAX_BATCH_SIZE",
            "MAX_WAIT_TIME_MS",
            "MIN_BATCH_SIZE",
            "MAX_QUEUE_SIZE",
            "LOAD_THRESHOLD",
            "LATENCY_THRESHOLD_MS",
        ]
    )
    assert set(KNOB_VALUES) == set(KNOBS)


@pytest.mark.parametrize("field", list(KNOBS))
def test_each_knob_is_read_from_its_variable_and_written_back_to_it(field: str) -> None:
    value, raw = KNOB_VALUES[field]
    config = BatchingConfig.from_env({KNOBS[field].env: raw})
    assert config.model_dump(mode="json")[field] == value
    assert BatchingConfig.from_env(config.to_env()) == config
    assert config.to_env()[KNOBS[field].env] == (
        str(value).lower() if isinstance(value, bool) else str(value)
    )


def test_min_above_max_is_refused_in_the_variables_names() -> None:
    with pytest.raises(ValueError) as caught:
        BatchingConfig.from_env({"MIN_BATCH_SIZE": "4", "MAX_BATCH_SIZE": "2"})
    assert "MIN_BATCH_SIZE (4) must be <= MAX_BATCH_SIZE (2)" in str(caught.value)
    with pytest.raises(ValueError, match=r"LOAD_THRESHOLD: .* \(got 'x{60}'\.\.\. \(100 characters\)\)"):
        BatchingConfig.from_env({"LOAD_THRESHOLD": "x" * 100})


def test_every_field_must_carry_a_knob() -> None:
    with pytest.raises(TypeError, match="must carry one Knob"):
        settings_module._knob("orphan", FieldInfo(annotation=int, default=1))


def _doc_rows(path: Path) -> dict[str, list[str]]:
    rows = {}
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_docs_environment_table_lists_each_knob_with_its_default() -> None:
    rows = _doc_rows(ROOT / "docs" / "serving.md")
    defaults = BatchingConfig.model_validate({}).to_env()
    for field, knob in KNOBS.items():
        assert knob.env in rows, f"docs/serving.md's environment table lacks {knob.env} ({field})"
        assert rows[knob.env][0].strip("`") in (defaults[knob.env], defaults[knob.env].removesuffix(".0"))
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{knob.env}`" in readme for knob in KNOBS.values())


def test_the_docs_name_the_configure_fields_in_their_order() -> None:
    text = " ".join((ROOT / "docs" / "serving.md").read_text().split())
    listed = ", ".join(f"`{field}`" for field in list(KNOBS)[:-1]) + f", `{list(KNOBS)[-1]}`"
    assert f"`/batching/configure` takes any subset of {listed}" in text
