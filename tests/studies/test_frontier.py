"""studies.frontier on small made-up rows, with the expected values worked out by hand."""

import pytest

from studies.frontier import (ABOVE_WORST, BELOW_BEST, TOO_FEW_CONTROLS, embedding_share,
                              equal_perplexity_savings, plot_frontier, savings_markdown)


def row(name, family, params, test_ppl, n=None, define_params=0, map_params=None):
    return {"name": name, "family": family, "n": n, "params": params, "define_params": define_params,
            "map_params": map_params, "test_ppl": test_ppl}


# ppl halves from 1M to 4M params and falls to 60 at 16M: each segment spans a factor 4 in params.
CONTROLS = [row("map-256", "control", 4e6, 100.0, n=256), row("map-64", "control", 1e6, 200.0, n=64),
            row("map-1024", "control", 16e6, 60.0, n=1024)]


def by_name(results):
    return {r.name: r for r in results}


def test_interpolation_is_log_linear_between_bracketing_controls():
    rows = CONTROLS + [row("recommended-64", "recommended", 1.5e6, 150.0, n=64, define_params=1000)]
    (result,) = equal_perplexity_savings(rows)
    # 150 lies halfway from 200 to 100, so log(params) lies halfway from log(1M) to log(4M): sqrt(1M * 4M) = 2M.
    assert result.control_params == pytest.approx(2e6)
    assert result.saving_pct == pytest.approx(25.0)  # 1 - 1.5M / 2M
    assert result.note == ""
    assert (result.name, result.family, result.n, result.params, result.test_ppl) == (
        "recommended-64", "recommended", 64, 1.5e6, 150.0)


def test_uneven_fraction_and_second_segment():
    rows = CONTROLS + [row("a", "recommended", 1e6, 175.0), row("b", "recommended", 5e6, 70.0),
                       row("c", "recommended", 4e6, 100.0)]
    results = by_name(equal_perplexity_savings(rows))
    # 175: a quarter of the way from 200 to 100 -> 1M * 4 ** 0.25 = sqrt(2) M.
    assert results["a"].control_params == pytest.approx(2 ** 0.5 * 1e6)
    assert results["a"].saving_pct == pytest.approx(100 * (1 - 1 / 2 ** 0.5))
    # 70: three quarters of the way from 100 to 60 -> 4M * 4 ** 0.75 = 4M * 2 ** 1.5.
    assert results["b"].control_params == pytest.approx(4e6 * 2 ** 1.5)
    # on a control point: exactly that control's params, no saving.
    assert results["c"].control_params == pytest.approx(4e6)
    assert results["c"].saving_pct == pytest.approx(0.0)


def test_negative_saving_when_the_unit_costs_parameters():
    rows = CONTROLS + [row("recommended-256", "recommended", 10e6, 80.0)]
    (result,) = equal_perplexity_savings(rows)
    # 80 lies halfway from 100 to 60 -> sqrt(4M * 16M) = 8M; 10M params cost 25 % more.
    assert result.control_params == pytest.approx(8e6)
    assert result.saving_pct == pytest.approx(-25.0)


def test_rows_outside_the_controls_range():
    rows = CONTROLS + [row("better", "recommended", 2e6, 50.0), row("worse", "recommended", 2e6, 250.0)]
    results = by_name(equal_perplexity_savings(rows))
    assert results["better"].control_params is None and results["better"].saving_pct is None
    assert results["better"].note == BELOW_BEST == "below the best control"
    assert results["worse"].control_params is None and results["worse"].saving_pct is None
    assert results["worse"].note == ABOVE_WORST == "above the worst control"


def test_non_monotone_controls_use_the_nearest_bracketing_segment():
    controls = [row("c1", "control", 1e6, 200.0), row("c2", "control", 2e6, 120.0),
                row("c4", "control", 4e6, 160.0), row("c8", "control", 8e6, 100.0)]
    # ppl 140 is bracketed by all three segments: 1M-2M (fraction 60/80), 2M-4M (fraction 1/2), 4M-8M (1/3).
    rows = controls + [row("low", "recommended", 1.2e6, 140.0), row("mid", "recommended", 3e6, 140.0),
                       row("high", "recommended", 7e6, 140.0), row("far", "recommended", 20e6, 140.0)]
    results = by_name(equal_perplexity_savings(rows))
    assert results["low"].control_params == pytest.approx(1e6 * 2 ** 0.75)
    assert results["mid"].control_params == pytest.approx(2e6 * 2 ** 0.5)
    assert results["high"].control_params == pytest.approx(4e6 * 2 ** (1 / 3))
    assert results["far"].control_params == pytest.approx(4e6 * 2 ** (1 / 3))  # beyond 8M: the last segment
    assert results["high"].saving_pct == pytest.approx(100 * (1 - 7e6 / (4e6 * 2 ** (1 / 3))))
    for r in results.values():
        assert "not monotone" in r.note
    assert "1.00M-2.00M" in results["low"].note and "4.00M-8.00M" in results["high"].note


def test_monotone_controls_have_no_note_and_flat_segment_takes_the_cheaper_control():
    controls = [row("c1", "control", 1e6, 200.0), row("c2", "control", 2e6, 150.0), row("c4", "control", 4e6, 150.0)]
    (result,) = equal_perplexity_savings(controls + [row("r", "recommended", 3e6, 150.0)])
    assert result.control_params == pytest.approx(2e6)
    assert result.saving_pct == pytest.approx(-50.0)
    assert result.note == ""


def test_only_non_control_rows_in_input_order_with_a_chosen_control_family():
    rows = [row("x", "sized", 1.5e6, 150.0), row("base-1", "baseline", 1e6, 200.0),
            row("y", "recommended", 1.5e6, 150.0), row("base-4", "baseline", 4e6, 100.0)]
    results = equal_perplexity_savings(rows, control_family="baseline")
    assert [r.name for r in results] == ["x", "y"]
    assert all(r.control_params == pytest.approx(2e6) for r in results)


def test_fewer_than_two_controls():
    rows = [row("map-64", "control", 1e6, 200.0), row("r", "recommended", 1e6, 150.0)]
    (result,) = equal_perplexity_savings(rows)
    assert result.control_params is None and result.saving_pct is None and result.note == TOO_FEW_CONTROLS


def test_markdown_table():
    rows = CONTROLS + [row("recommended-64", "recommended", 1.5e6, 150.0, n=64),
                       row("recommended-256", "recommended", 10e6, 80.0, n=256),
                       row("better", "recommended", 2e6, 50.0)]
    lines = savings_markdown(equal_perplexity_savings(rows)).splitlines()
    assert lines[0] == "| row | n | params | test ppl | control params at equal ppl | saving % | note |"
    assert lines[1].startswith("|---|")
    assert lines[2] == "| recommended-64 | 64 | 1.50M | 150.00 | 2.00M | +25.0 |  |"
    assert lines[3] == "| recommended-256 | 256 | 10.00M | 80.00 | 8.00M | -25.0 |  |"
    assert lines[4] == "| better | - | 2.00M | 50.00 | - | - | below the best control |"
    assert len(lines) == 5


def test_embedding_share():
    assert embedding_share(row("r", "recommended", 1000, 1.0, define_params=100, map_params=400)) == 0.5
    assert embedding_share(row("r", "recommended", 1000, 1.0, define_params=100)) == 0.1


@pytest.mark.parametrize("with_map", [True, False])
def test_plot_writes_a_png(tmp_path, with_map):
    rows = [row(r["name"], r["family"], r["params"], r["test_ppl"], n=r["n"],
                map_params=r["params"] / 2 if with_map else None) for r in CONTROLS]
    rows += [row("recommended-64", "recommended", 1.5e6, 150.0, n=64, define_params=3e5,
                 map_params=5e5 if with_map else None),
             row("recommended-256", "recommended", 10e6, 80.0, n=256, define_params=3e5,
                 map_params=4e6 if with_map else None)]
    path = tmp_path / "frontier.png"
    assert plot_frontier(rows, str(path), title="made up") == str(path)
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
