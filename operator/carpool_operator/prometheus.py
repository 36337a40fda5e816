"""The operator's Prometheus client: one instant query, one number, or an error that says why not.

The autoscaler must never scale on a guess, so every way a query can fail to produce exactly one
finite, non-negative number is an error of its own, and each error's `reason` becomes the reason
of the policy's MetricsAvailable=False condition:

    PrometheusError                 (reason)
    ├── PrometheusUnreachable       PrometheusUnreachable: connection refused, DNS, timeout
    ├── InvalidPrometheusUrl        InvalidPrometheusUrl: not an http(s) URL
    ├── PrometheusRejected          PrometheusRejected: an HTTP error or status "error" (bad PromQL...)
    ├── NoSeries                    NoSeries: the query matched nothing (pods not scraped yet?)
    └── UnusableResult              UnusableResult: several series, NaN, negative, not a number

The default query sums `carpool_queue_size` over the policy's pods. It relies on the scrape
configuration giving each pod's series the labels `namespace` and `policy` (the latter from the
pod label `carpool.dev/policy`): see docs/autoscaling.md.
"""

from __future__ import annotations

import math
import string
from typing import Any, ClassVar

import httpx

__all__ = [
    "DEFAULT_QUERY",
    "DEFAULT_TIMEOUT_S",
    "InvalidPrometheusUrl",
    "NoSeries",
    "PrometheusError",
    "PrometheusRejected",
    "PrometheusUnreachable",
    "UnusableResult",
    "query_value",
    "query_vector",
    "render_query",
]

DEFAULT_QUERY = 'sum(carpool_queue_size{namespace="$namespace", policy="$policy"})'
"""Total requests waiting over the policy's pods; `$namespace` and `$policy` are filled in."""

DEFAULT_TIMEOUT_S = 5.0


class PrometheusError(Exception):
    """No usable metric; `reason` is a CamelCase word for the MetricsAvailable condition."""

    reason: ClassVar[str] = "PrometheusError"


class PrometheusUnreachable(PrometheusError):
    reason = "PrometheusUnreachable"


class InvalidPrometheusUrl(PrometheusError):
    reason = "InvalidPrometheusUrl"


class PrometheusRejected(PrometheusError):
    reason = "PrometheusRejected"


class NoSeries(PrometheusError):
    reason = "NoSeries"


class UnusableResult(PrometheusError):
    reason = "UnusableResult"


def _promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def render_query(template: str | None, *, namespace: str, policy: str) -> str:
    """The PromQL to run for one policy: `$namespace` and `$policy` replaced, the rest verbatim.

    Other `$` sequences (such as `$1` in label_replace) are left as they are.
    """
    values = {"namespace": _promql_string(namespace), "policy": _promql_string(policy)}
    return string.Template(template or DEFAULT_QUERY).safe_substitute(values)


async def query_value(
    base_url: str,
    query: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> float:
    """Run an instant query at `base_url` and return its single value; raise PrometheusError otherwise."""
    return _single_value(await _query(base_url, query, timeout_s), query)


async def query_vector(
    base_url: str, query: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[tuple[dict[str, str], float]]:
    """Run an instant query and return every series' labels and value (finite values only; an
    empty answer is an empty list). Raise PrometheusError when there is no answer to read."""
    data = await _query(base_url, query, timeout_s)
    if (
        not isinstance(data, dict)
        or data.get("resultType") != "vector"
        or not isinstance(data.get("result"), list)
    ):
        raise UnusableResult(f"{query!r} returned no instant vector: {data!r}")
    series: list[tuple[dict[str, str], float]] = []
    for item in data["result"]:
        try:
            value = float(item["value"][1])
            labels = {str(k): str(v) for k, v in item.get("metric", {}).items()}
        except (TypeError, KeyError, IndexError, ValueError, AttributeError) as error:
            raise UnusableResult(f"{query!r} returned a malformed sample: {item!r}") from error
        if math.isfinite(value):
            series.append((labels, value))
    return series


async def _query(base_url: str, query: str, timeout_s: float) -> Any:
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url, params={"query": query})
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
        raise InvalidPrometheusUrl(f"prometheusUrl {base_url!r} is not an http(s) URL: {error}") from error
    except httpx.TimeoutException as error:
        raise PrometheusUnreachable(f"{base_url} did not answer within {timeout_s:g} s") from error
    except httpx.TransportError as error:
        raise PrometheusUnreachable(f"{base_url} is unreachable: {error or type(error).__name__}") from error

    body = _json_or_none(response)
    if response.status_code != 200 or body is None or body.get("status") != "success":
        detail = _error_detail(body) or response.text[:200].strip() or "no body"
        raise PrometheusRejected(f"{base_url} answered {response.status_code} to {query!r}: {detail}")
    return body.get("data")


def _json_or_none(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _error_detail(body: dict[str, Any] | None) -> str:
    if not body:
        return ""
    return ": ".join(str(body[key]) for key in ("errorType", "error") if body.get(key))


def _single_value(data: Any, query: str) -> float:
    if not isinstance(data, dict):
        raise UnusableResult(f"{query!r} answered no data: {data!r}")
    result_type, result = data.get("resultType"), data.get("result")
    if result_type == "scalar":
        sample = result
    elif result_type == "vector" and isinstance(result, list):
        if not result:
            raise NoSeries(f"{query!r} matched no series")
        if len(result) > 1:
            labels = [item.get("metric", {}) for item in result[:3] if isinstance(item, dict)]
            raise UnusableResult(
                f"{query!r} returned {len(result)} series (e.g. {labels}); "
                "it must return one: wrap it in sum()"
            )
        sample = result[0].get("value") if isinstance(result[0], dict) else None
    else:
        raise UnusableResult(f"{query!r} returned a {result_type}, not an instant vector or scalar")
    try:
        value = float(sample[1])  # type: ignore[index]
    except (TypeError, IndexError, ValueError) as error:
        raise UnusableResult(f"{query!r} returned a malformed sample: {sample!r}") from error
    if not math.isfinite(value) or value < 0:
        raise UnusableResult(f"{query!r} returned {value}, not a finite count of waiting requests")
    return value
