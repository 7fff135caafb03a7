"""Summing the workers' Prometheus texts (gateway.metrics_merge): what `/metrics` answers for
`tally gateway --workers N`."""

from __future__ import annotations

import pytest

from tally.gateway.metrics import Metrics
from tally.gateway.metrics_merge import gauge, parse, render, sum_texts, summed


def worker_text(accepted: int, repeats: int, seconds: list[float], live: int) -> str:
    metrics = Metrics()
    metrics.votes.inc("accepted", accepted)
    if repeats:
        metrics.votes.inc("already_voted", repeats)
    for s in seconds:
        metrics.vote_seconds.observe(s)
    metrics.sample("tally_live_connections", "Open live connections.", "gauge", lambda: live)
    return metrics.render()


def samples(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def test_counters_histograms_and_gauges_add_up_by_name_and_labels() -> None:
    """Each sample is the sum of the workers' samples with the same name and labels; a label
    only one worker has is kept; the result is what one process seeing everything renders."""
    one = worker_text(3, 0, [0.0004, 0.02], live=5)
    two = worker_text(4, 2, [0.003, 0.02, 3.0], live=7)
    total = samples(sum_texts([one, two]))
    assert total['tally_votes_total{outcome="accepted"}'] == "7"
    assert total['tally_votes_total{outcome="already_voted"}'] == "2"
    assert total["tally_live_connections"] == "12"
    together = samples(worker_text(7, 2, [0.0004, 0.02, 0.003, 0.02, 3.0], live=12))
    assert total.keys() == together.keys()
    for key, value in together.items():
        assert float(total[key]) == pytest.approx(float(value)), key
    assert float(total["tally_vote_duration_seconds_sum"]) == pytest.approx(3.0434)


def test_families_stay_together_with_their_comments_once() -> None:
    """A label set only a later text has joins its family's block, not the end of the text;
    HELP and TYPE appear once per family, before its samples."""
    one = worker_text(1, 0, [], live=0)
    two = worker_text(1, 1, [], live=0)
    lines = sum_texts([one, two]).splitlines()
    votes = [i for i, line in enumerate(lines) if "tally_votes_total" in line]
    assert votes == list(range(votes[0], votes[0] + 4))  # HELP, TYPE, accepted, already_voted
    assert sum(line.startswith("# TYPE tally_votes_total") for line in lines) == 1
    assert lines[votes[-1]] == 'tally_votes_total{outcome="already_voted"} 1'


def test_one_text_renders_back_to_itself_and_extra_gauges_append() -> None:
    """Parsing and rendering keeps a text (integers without a decimal point); a gauge family
    added to the sum comes last."""
    text = "# HELP a A.\n# TYPE a counter\na 3\n# HELP b B.\n# TYPE b gauge\nb 0.5\n"
    assert sum_texts([text]) == text
    merged = render(summed([parse(text), parse(text), gauge("n", "Workers.", 2)]))
    assert merged.endswith(
        "a 6\n# HELP b B.\n# TYPE b gauge\nb 1\n# HELP n Workers.\n# TYPE n gauge\nn 2\n"
    )


def test_special_values_and_malformed_lines() -> None:
    """+Inf and NaN are written as Prometheus writes them; a line that is no sample is refused."""
    assert samples(sum_texts(["x +Inf\n", "x 1\n"]))["x"] == "+Inf"
    assert samples(sum_texts(["x NaN\n"]))["x"] == "NaN"
    with pytest.raises(ValueError, match="not a sample line"):
        parse("garbage\n")
    with pytest.raises(ValueError, match="could not convert"):
        parse("x twelve\n")
