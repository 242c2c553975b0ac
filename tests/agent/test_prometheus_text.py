"""The agent's own Prometheus text reader reads what ``prometheus_client.parser`` reads.

The agent reads the scoring server's ``/metrics`` without prometheus-client (ADR 0030:
importing its parser loads the whole library). These tests feed both readers real
expositions (rendered by the scoring server's own :class:`~edgeship.scoring.metrics.Metrics`)
and hand-written edge cases, and check they yield the same samples.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeship.agent.telemetry.scrape import parse_metrics, text_samples
from edgeship.scoring.metrics import ENV_MULTIPROC, Metrics


def _theirs(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def _ours(text: str) -> list[tuple[str, dict[str, str], float]]:
    return list(text_samples(text))


def _same(left: list[tuple[str, dict[str, str], float]], right: list[tuple[str, dict[str, str], float]]) -> bool:
    def key(sample: tuple[str, dict[str, str], float]) -> tuple[str, tuple[tuple[str, str], ...], str]:
        return sample[0], tuple(sorted(sample[1].items())), repr(float(sample[2]))

    return sorted(map(key, left)) == sorted(map(key, right))


def _observed(metrics: Metrics) -> str:
    for status, seconds in ((200, 0.0004), (200, 0.003), (404, 0.02), (422, 1.5), (500, 7.0), (503, 30.0)):
        metrics.observe("/score", status, seconds)
    metrics.observe("/v2/models/{name}/infer", 200, 0.01)
    metrics.observe("/", 200, 0.0001)
    return metrics.render()[0].decode()


def test_a_scoring_servers_exposition_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MULTIPROC, raising=False)
    text = _observed(Metrics())
    ours = _ours(text)
    assert len(ours) > 30 and _same(ours, _theirs(text))
    totals = parse_metrics(text)
    assert (totals.requests, totals.server_errors, totals.client_errors) == (7, 2, 2)
    assert totals.buckets[float("inf")] == 7 and totals.buckets[0.0005] == 1


@pytest.mark.parametrize(
    "text",
    [
        'm{a="x\\\\y",b="q\\"uote",c="new\\nline"} 1\n',  # escapes
        'm{a="1",} 2.5 1700000000000\n',  # trailing comma, timestamp
        "m 3\nm_other{} +Inf\n# HELP m something\n\n  m{a = \"b\" , c=\"d\"}   -Inf  \n",
        'm{le="0.005"} 1e3\nm{a="{},=",} NaN\n',
    ],
)
def test_edge_cases_read_the_same(text: str) -> None:
    assert _same(_ours(text), _theirs(text))


@pytest.mark.parametrize(
    "text", ["m{a=\"b\" 1\n", "m{a=b} 1\n", "m\n", "{a=\"b\"} 1\n", "m{a=\"b\"c=\"d\"} 1\n", "m one\n"]
)
def test_malformed_lines_are_refused_by_both(text: str) -> None:
    with pytest.raises(ValueError):
        _ours(text)
    with pytest.raises(ValueError):
        _theirs(text)
