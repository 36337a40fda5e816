"""The operator's settings, its command line, and its RBAC rules as data."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import kopf
import pytest

from carpool_operator import command, rbac, settings

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    config = settings.OperatorConfig()
    assert config.serving_image == settings.DEFAULT_SERVING_IMAGE
    assert config.serving_gpu_image == settings.DEFAULT_SERVING_GPU_IMAGE
    assert settings.DEFAULT_SERVING_GPU_IMAGE.endswith("-cuda") and config.api_timeout_s == 30.0
    assert (config.resync_interval_s, config.push_timeout_s, config.retries) == (30.0, 5.0, 8)
    assert config.kubeconfig is None and config.image_pull_secrets == ()


def test_from_env() -> None:
    config = settings.OperatorConfig.from_env(
        {
            "CARPOOL_SERVING_IMAGE": "reg/carpool-serving:2",
            "CARPOOL_SERVING_GPU_IMAGE": " reg/carpool-serving:2-cuda ",
            "CARPOOL_OPERATOR_API_TIMEOUT_SECONDS": "4",
            "CARPOOL_IMAGE_PULL_SECRETS": "a, b,",
            "CARPOOL_OPERATOR_RESYNC_SECONDS": "12.5",
            "CARPOOL_OPERATOR_PUSH_TIMEOUT_SECONDS": "2",
            "KUBECONFIG": "/tmp/k1:/tmp/k2",
        },
        resync_interval_s=None,
    )
    assert config.serving_image == "reg/carpool-serving:2"
    assert (config.serving_gpu_image, config.api_timeout_s) == ("reg/carpool-serving:2-cuda", 4.0)
    assert config.image_pull_secrets == ("a", "b")
    assert (config.resync_interval_s, config.push_timeout_s) == (12.5, 2.0)
    assert config.kubeconfig == Path("/tmp/k1")
    assert settings.OperatorConfig.from_env({}, resync_interval_s=3.0).resync_interval_s == 3.0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        pytest.param(
            {"CARPOOL_OPERATOR_RESYNC_SECONDS": "soon"}, "CARPOOL_OPERATOR_RESYNC_SECONDS must be a number"
        ),
        pytest.param({"CARPOOL_OPERATOR_RESYNC_SECONDS": "0"}, "resync_interval_s must be > 0, got 0.0"),
    ],
)
def test_bad_settings_are_refused_naming_them(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings.OperatorConfig.from_env(environ)


@pytest.mark.parametrize(("retry", "delay"), [(0, 2.0), (1, 4.0), (4, 32.0), (5, 60.0), (100, 60.0)])
def test_retries_back_off_exponentially_up_to_a_cap(retry: int, delay: float) -> None:
    assert settings.OperatorConfig().retry_delay(retry) == delay


@pytest.mark.parametrize(
    ("interval_s", "max_delay_s", "delays"),
    [
        pytest.param(15.0, 60.0, [15, 30, 60, 60, 60], id="production"),
        pytest.param(0.5, 1.0, [0.5, 1, 1, 1, 1], id="tests"),
        pytest.param(120.0, 60.0, [120, 120, 120, 120, 120], id="interval-above-the-cap"),
    ],
)
def test_the_autoscalers_retries_back_off_from_its_interval(
    interval_s: float, max_delay_s: float, delays: list[float]
) -> None:
    config = settings.OperatorConfig(autoscale_interval_s=interval_s, retry_max_delay_s=max_delay_s)
    assert [config.retry_delay(retry, first_s=config.autoscale_interval_s) for retry in range(5)] == delays


def test_kopf_keeps_its_state_in_annotations_and_posts_only_warnings() -> None:
    kopf_settings = kopf.OperatorSettings()
    settings.tune_kopf(kopf_settings)
    assert isinstance(kopf_settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(kopf_settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert kopf_settings.persistence.finalizer == "carpool.dev/cleanup"
    assert kopf_settings.posting.level == logging.WARNING
    assert kopf_settings.peering.standalone and kopf_settings.scanning.disabled


def test_the_command_line() -> None:
    args = command.parser().parse_args(
        ["--liveness", "http://0.0.0.0:8080/healthz", "-n", "a", "-n", "b", "--resync-seconds", "5", "-v"]
    )
    assert (args.liveness, args.namespace, args.resync_seconds, args.verbose) == (
        "http://0.0.0.0:8080/healthz",
        ["a", "b"],
        5.0,
        True,
    )


def test_a_bad_setting_stops_the_command_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CARPOOL_OPERATOR_PUSH_TIMEOUT_SECONDS", "-1")
    with pytest.raises(SystemExit) as exited:
        command.main([])
    assert exited.value.code == 2
    assert "push_timeout_s must be > 0, got -1.0" in capsys.readouterr().err


def test_carpool_operator_help_runs_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = sys.modules['transformers'] = None\n"
        "from carpool import cli; sys.exit(cli.main(['operator', '--help']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--liveness" in result.stdout


def test_rbac_rules_are_plain_policy_rules() -> None:
    for rule in rbac.RULES:
        as_dict = rule.as_dict()
        assert set(as_dict) == {"apiGroups", "resources", "verbs"}
        assert set(as_dict["verbs"]) <= {"get", "list", "watch", "create", "patch", "delete"}
    assert rbac.allows("carpool.dev", "batchingpolicies/status", "patch")
    assert not rbac.allows("", "secrets", "list")  # read by name only
    assert not rbac.allows("apps", "deployments", "update")  # never PUT
