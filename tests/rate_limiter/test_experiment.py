"""The experiment's figures (the README quotes them) and its chart."""

from __future__ import annotations

from pathlib import Path

import pytest

from rate_limiter import experiment

RATE = experiment.RATE


def test_each_algorithm_allows_the_boundary_burst_the_readme_says() -> None:
    runs = {r.name: r for r in experiment.runs()}
    # Fixed windows: a full window's worth on each side of the boundary (up to 2x the limit).
    assert RATE < runs["fixed window"].worst_span() <= 2 * RATE
    assert runs["fixed window"].worst_span() == 19
    # Envoy's counts the refused bulk request too, so it admits less afterwards.
    assert runs["Envoy's fixed window"].units < runs["fixed window"].units
    # The sliding log is exact; the sliding window's estimate held here too.
    assert runs["sliding log"].worst_span() <= RATE
    assert runs["sliding window"].worst_span() <= RATE
    # GCRA: the bucket (10) plus what refills within the span (10 per 10 s), at most.
    assert RATE < runs["GCRA"].worst_span() <= 2 * RATE
    assert runs["GCRA"].units == max(r.units for r in runs.values())


def test_the_experiment_prints_its_table_and_draws_its_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "chart.png"
    monkeypatch.setattr("sys.argv", ["experiment", str(out)])
    experiment.main()
    printed = capsys.readouterr().out
    assert "sliding log" in printed and f"chart: {out}" in printed
    assert out.read_bytes().startswith(b"\x89PNG")
