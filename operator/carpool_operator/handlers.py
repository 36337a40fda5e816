"""Kopf handlers of the BatchingPolicy: thin glue between Kopf and the two passes, `reconciler`
and `autoscaler`.

`register(registry, config)` declares them on an explicit registry, with the intervals and
retries of `config` (no import-time globals):

- create / update / resume: a full reconcile pass; pods still behind the config make Kopf retry
  the handler with exponential back-off (`config.retries` times, then the timer carries on);
- a timer every `config.resync_interval_s`: the same pass, which restores deleted or hand-edited
  children and corrects pods that restarted or missed a push;
- delete: the children go (the owner references let the garbage collector do it too);
- a timer every `config.autoscale_interval_s`, only while spec.autoscaling.enabled is true: an
  autoscaling pass; a missing metric or a failed API call retries it with the same back-off,
  starting from that interval;
- a change of spec.autoscaling.enabled: switched off, the autoscaler's status goes;
- a timer every `config.experiment_interval_s`, only while spec.experiment is set: a measuring
  pass of the experiment (`experimenter`), which writes status.experiment and, when its
  promotion rule names a winner, patches the spec to the winner's knobs and ends the experiment.

Each pass keeps its state in Kopf's per-object memo (`state_of`) and returns an outcome; the
status patches are made here, from it. Durable state goes only through `patch.status` and
`patch.fns` (conditions); handler return values would land in a status field that the CRD's
schema prunes (Kopf docs, "Results delivery").
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import MutableMapping
from typing import Any, TypeVar, cast

import httpx
import kopf

from carpool_operator import autoscaler, conditions, experimenter, kube, reconciler, settings, spec

__all__ = ["Runtime", "register", "state_of"]

State = TypeVar("State")


class Runtime:
    """The operator's long-lived objects: the API client, opened at start-up, closed at exit."""

    def __init__(self, config: settings.OperatorConfig, api: kube.Api | None = None) -> None:
        self.config = config
        self._api = api

    @property
    def api(self) -> kube.Api:
        if self._api is None:
            raise RuntimeError("the Kubernetes API client is opened by the start-up handler")
        return self._api

    @property
    def closed(self) -> bool:
        return self._api is None

    def open(self) -> None:
        if self._api is None:
            self._api = kube.Api.from_kubeconfig(self.config.kubeconfig, timeout_s=self.config.api_timeout_s)

    async def close(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None


def state_of(memo: MutableMapping[str, Any], kind: type[State]) -> State:
    """A pass's state for one policy (`kind()`), kept in Kopf's per-object memo, made on first use."""
    key = f"carpool.{kind.__name__}"
    state = memo.get(key)
    if not isinstance(state, kind):
        state = memo[key] = kind()
    return state


def _record(outcome: reconciler.Outcome, body: kopf.Body, patch: kopf.Patch) -> None:
    # Only what changed: a converged policy's periodic pass then writes nothing at all (the
    # conditions' patch function yields no change either when they are as they were).
    current = body.get("status") or {}
    patch.status.update({key: value for key, value in outcome.status.items() if current.get(key) != value})
    patch.fns.append(cast(kopf.PatchFn, conditions.updater(outcome.conditions)))
    if (body.get("status") or {}).get("experiment") is not None:
        patch.fns.append(cast(kopf.PatchFn, experimenter.mark_ended))


async def _pass(
    runtime: Runtime, body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int
) -> reconciler.Outcome:
    state = state_of(memo, reconciler.PolicyState)
    try:
        outcome = await reconciler.reconcile(runtime.api, runtime.config, body, state)
    except (kube.ApiError, httpx.HTTPError) as exc:
        # httpx's timeouts often carry no message: name the error's type as well.
        problem = str(exc) if isinstance(exc, kube.ApiError) else f"{type(exc).__name__} {exc}".strip()
        delay = runtime.config.retry_delay(retry)
        message = f"Kubernetes API: {problem} (retrying in {delay:g} s)"
        kube.post_event(body, reason="ReconcileFailed", message=message, warning=True)
        raise kopf.TemporaryError(message, delay=delay) from exc
    _record(outcome, body, patch)
    return outcome


def _record_autoscaling(outcome: autoscaler.Outcome, patch: kopf.Patch) -> None:
    # Written on the freshest body, and only while autoscaling is still on there: a pass that
    # races with switching it off writes nothing.
    set_conditions = conditions.updater(outcome.conditions)

    def apply(body: MutableMapping[str, Any]) -> None:
        if not spec.autoscaling_enabled(body.get("spec")):
            return
        set_conditions(body)
        status = body["status"]
        for key, value in outcome.status.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value

    patch.fns.append(cast(kopf.PatchFn, apply))


def _clear_autoscaling(body: MutableMapping[str, Any]) -> None:
    # A patch function: the autoscaler's status and conditions go, if still there on the freshest body.
    if not autoscaler.left_over(body):
        return
    status = body["status"]
    for key in autoscaler.STATUS_FIELDS:
        status.pop(key, None)
    if isinstance(status.get("conditions"), list):
        status["conditions"] = [
            c for c in status["conditions"] if c.get("type") not in conditions.AUTOSCALER_TYPES
        ]


def register(
    registry: kopf.OperatorRegistry, config: settings.OperatorConfig, *, runtime: Runtime | None = None
) -> Runtime:
    """Declare the operator's handlers on `registry`; return the runtime they share."""
    runtime = runtime or Runtime(config)

    @kopf.on.startup(registry=registry)
    async def open_api(**_: Any) -> None:
        runtime.open()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        runtime.open()
        return runtime.api.connection_info()

    @kopf.on.cleanup(registry=registry)
    async def close_api(**_: Any) -> None:
        await runtime.close()

    @kopf.on.resume(*spec.RESOURCE, registry=registry, id="reconcile")
    @kopf.on.create(*spec.RESOURCE, registry=registry, id="reconcile", retries=config.retries)
    @kopf.on.update(*spec.RESOURCE, registry=registry, id="reconcile", retries=config.retries)
    async def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any) -> None:
        outcome = await _pass(runtime, body, patch, memo, retry)
        if outcome.invalid is not None:
            raise kopf.PermanentError(outcome.invalid)
        if outcome.pods_behind:
            raise kopf.TemporaryError(
                f"{outcome.pods_behind} pod(s) behind the batching config",
                delay=config.retry_delay(retry),
            )

    @kopf.timer(
        *spec.RESOURCE,
        registry=registry,
        id="resync",
        interval=config.resync_interval_s,
        initial_delay=config.resync_interval_s,
    )
    async def resync(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
        if runtime.closed:
            # Kopf can start a policy's timer while the operator exits, after its daemon killer
            # has run (the race nolar/kopf#1272 fixed for pausing); nothing would stop it but the
            # 5 s grace for hung tasks. End it at once: the operator is going away.
            raise asyncio.CancelledError("the operator is exiting")
        # Kopf passes timers their retry count too (its TimerFn type does not declare it): a
        # failing periodic pass backs off as the handlers do.
        await _pass(runtime, body, patch, memo, retry=int(kwargs.get("retry") or 0))

    @kopf.on.delete(*spec.RESOURCE, registry=registry, id="cleanup")
    async def cleanup(body: kopf.Body, retry: int, **_: Any) -> None:
        try:
            deleted = await reconciler.remove_children(runtime.api, body)
        except (kube.ApiError, httpx.HTTPError) as exc:
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=config.retry_delay(retry)) from exc
        if deleted:
            kube.post_event(body, reason="Deleted", message="deleted " + ", ".join(deleted))

    def _start_windows(memo: Any, **_: Any) -> float:
        # Called by Kopf each time the timer starts for a policy: the windows start over.
        state_of(memo, autoscaler.AutoscalerState).history = None
        return 0.0

    def _autoscaling_on(body: kopf.Body, **_: Any) -> bool:
        return spec.autoscaling_enabled(body.get("spec"))

    @kopf.timer(
        *spec.RESOURCE,
        registry=registry,
        id="autoscale",
        interval=config.autoscale_interval_s,
        initial_delay=_start_windows,
        when=_autoscaling_on,
    )
    async def autoscale(
        body: kopf.Body,
        patch: kopf.Patch,
        memo: kopf.Memo,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        retry: int = 0,  # not in Kopf's TimerFn protocol, hence the default
        **_: Any,
    ) -> None:
        delay = config.retry_delay(retry, first_s=config.autoscale_interval_s)
        try:
            outcome = await autoscaler.autoscale(
                runtime.api,
                config,
                body,
                state_of(memo, autoscaler.AutoscalerState),
                now=asyncio.get_running_loop().time(),
                logger=logger,
            )
        except autoscaler.KubernetesFailed as exc:
            raise kopf.TemporaryError(str(exc), delay=delay) from exc
        if outcome is None:
            return
        _record_autoscaling(outcome, patch)
        if outcome.failure is not None:
            raise kopf.TemporaryError(outcome.failure, delay=delay)

    @kopf.on.field(*spec.RESOURCE, registry=registry, id="autoscaling-switch", field=spec.AUTOSCALING_SWITCH)
    async def autoscaling_switch(
        old: Any, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
    ) -> None:
        if autoscaler.switched_off(body, state_of(memo, autoscaler.AutoscalerState), old=old):
            patch.fns.append(cast(kopf.PatchFn, _clear_autoscaling))

    def _experiment_on(body: kopf.Body, **_: Any) -> bool:
        return (body.get("spec") or {}).get("experiment") is not None

    @kopf.timer(
        *spec.RESOURCE,
        registry=registry,
        id="experiment",
        interval=config.experiment_interval_s,
        when=_experiment_on,
    )
    async def experiment(
        body: kopf.Body,
        patch: kopf.Patch,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        **_: Any,
    ) -> None:
        outcome = await experimenter.measure(
            config, body, now=datetime.datetime.now(datetime.UTC), logger=logger
        )
        if outcome is None:
            return
        set_condition = conditions.updater((outcome.condition,))
        promoting = outcome.spec_patch is not None

        def apply(fresh: MutableMapping[str, Any]) -> None:
            # On the freshest body: a pass that raced with the experiment's end writes nothing.
            if not promoting and (fresh.get("spec") or {}).get("experiment") is None:
                return
            status = fresh.setdefault("status", {})
            status["experiment"] = outcome.status
            set_condition(fresh)

        patch.fns.append(cast(kopf.PatchFn, apply))
        if outcome.spec_patch is not None:
            patch.spec.update(outcome.spec_patch)

    return runtime
