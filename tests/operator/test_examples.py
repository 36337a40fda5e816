"""Every file in examples/ works as written: the operator reconciles it, and every model path the
pods are given lies in a source mounted into the serving container (or is the image's own model)."""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from carpool_operator import kube
from tests.support import kube as k8s

pytestmark = pytest.mark.integration

NS = "default"
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[k8s.ApiServer]:
    async with k8s.api_server() as api:
        config = k8s.fast_config(
            k8s.write_kubeconfig(tmp_path / "kubeconfig", str(api.url)),
            autoscale_interval_s=3600.0,
            serving_gpu_image="carpool-serving:test-cuda",
        )
        async with k8s.running_operator(api, config):
            yield api


def _within(path: str, root: str) -> bool:
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container["env"]}


async def test_every_example_is_reconciled_with_its_models_mounted(server: k8s.ApiServer) -> None:
    documents = [yaml.safe_load(path.read_text()) for path in EXAMPLES]
    assert len(documents) == 5
    for document in documents:
        await server.create(kube.POLICIES, NS, {"metadata": document["metadata"], "spec": document["spec"]})

    sources = set()
    for document in documents:
        name = document["metadata"]["name"]
        variants = [v["name"] for v in (document["spec"].get("experiment") or {}).get("variants") or ()]
        deployments = [
            await k8s.eventually(lambda child=child: server.get(kube.DEPLOYMENTS, NS, child), what=child)
            for child in ([f"{name}-{variant}" for variant in variants] or [name])
        ]
        for variant, deployment in zip(variants, deployments, strict=False):
            # each variant's pods run its own config, and say which variant they are
            env = _env(deployment["spec"]["template"]["spec"]["containers"][0])
            assert env["CARPOOL_VARIANT"] == variant
            assert deployment["spec"]["selector"]["matchLabels"]["carpool.dev/variant"] == variant
        if variants:
            replicas = [d["spec"]["replicas"] for d in deployments]
            assert sum(replicas) == document["spec"]["serving"]["replicas"]
        deployment = deployments[0]
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes") or ()}
        mounts = container.get("volumeMounts") or ()
        assert all(mount["name"] in volumes for mount in mounts)
        env = _env(container)
        models = dict(item.split("=", 1) for item in filter(None, env.get("CARPOOL_MODELS", "").split(",")))
        assert [m["name"] for m in document["spec"].get("models") or ()] == list(models)
        for model, path in models.items():
            [mount] = [m for m in mounts if _within(path, m["mountPath"])] or [None]
            assert mount is not None, f"{name}: model {model} at {path} lies in no mounted volume"
            assert mount.get("readOnly") is True
            volume = volumes[mount["name"]]
            sources.add(next(key for key in ("persistentVolumeClaim", "emptyDir", "image") if key in volume))
            if "emptyDir" in volume:  # an init container fills it from the model image
                [init] = [c for c in pod["initContainers"] if c["volumeMounts"][0]["name"] == mount["name"]]
                assert init["command"][0] == "cp" and init["image"].startswith("registry.example.com/")
        if not models:
            assert "CARPOOL_MODELS" not in env  # the image's embedded default
        gpu = (document["spec"].get("serving") or {}).get("gpu")
        if gpu is not None:
            assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpu.get("count", 1))
            assert env["CARPOOL_DEVICE"] == "cuda" and container["image"] == "carpool-serving:test-cuda"
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
                "tolerations"
            ]
        else:
            assert "CARPOOL_DEVICE" not in env and container["image"] == "carpool-serving:test"
        ready = await k8s.eventually(
            lambda name=name: next(
                (
                    c
                    for c in (server.get(kube.POLICIES, NS, name) or {})
                    .get("status", {})
                    .get("conditions", [])
                    if c["type"] == "Ready"
                ),
                None,
            ),
            what=f"{name} Ready",
        )
        assert ready["reason"] != "InvalidSpec", ready["message"]
        config_map = server.get(kube.CONFIG_MAPS, NS, f"{name}-config")
        assert config_map is not None
        tuned = [m["name"] for m in document["spec"].get("models") or () if m.get("batching")]
        overrides = config_map["data"]["CARPOOL_MODEL_BATCHING"]
        assert [entry.split(":", 1)[0] for entry in filter(None, overrides.split(";"))] == tuned
    assert sources == {"persistentVolumeClaim", "emptyDir"}
