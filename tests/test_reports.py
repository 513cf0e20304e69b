"""The reports as data: every table's cells and rounds, their parameter counts, z-scores and claims."""
import json
import pathlib

import pytest

from mnistcompare.experiments import (check_claims, markdown_table, score_cells, score_counts, strict_score,
                                      summarise, tables_summary, z_score)
from mnistcompare.models import build_model, count_params
from mnistcompare.reports import ALIASES, PRESETS, STUDIES, TABLES, Claim, Study, preset, study


@pytest.mark.parametrize("name, cells, rounds", [
    ("report000-table1", 3, 15), ("report001-table2", 9, 10), ("report002-table1", 6 + 5, 10),
    ("report003-table1", 14, 10), ("report004-table4", 4, 20)])
def test_each_table_has_its_reports_cells_and_rounds(name, cells, rounds):
    chosen = study(name)
    entries = chosen.entries()
    assert len(entries) == cells and chosen.rounds == rounds
    assert all(e.config.validate() for e in entries)
    # every row of the report's table, each with its figures; then the variants the report does not describe
    published = [e for e in entries if e.published]
    assert all("test_accuracy" in e.published for e in published)
    assert [e.name for e in published] == [e.name for e in entries[:len(published)]]
    assert len(published) == {"report002-table1": 6}.get(name, cells)
    # the strict figure needs the report's rounds: given wherever the report gives them
    assert all(e.published.get("rounds") == rounds for e in published if e.name != "Basic Net")
    assert all(e.config.numerics == "torch" for e in entries)  # the reports' framework
    names = {e.name for e in entries}
    for claim in chosen.claims:
        assert {n for pair in claim.better + claim.similar + claim.faster for n in pair} <= names
    for figure in chosen.figures:
        assert {n for panel in figure.panels for n in panel.entries} <= names


def test_every_table_is_a_study_and_old_names_still_work():
    assert set(TABLES) == {"report000-table1", "report000-normalisation", "report001-table2", "report002-table1",
                           "report003-table1", "report004-table4"}
    assert study("sharing-aux") is STUDIES["report001-table2"] and study("bn-dropout") is STUDIES["report002-table1"]
    assert set(ALIASES.values()) <= set(STUDIES)
    assert all(preset(name).numerics == "torch" for name in PRESETS if name.startswith("report"))


def test_report000_table1_nets_have_the_published_parameter_counts():
    for entry in study("report000-table1").entries():
        assert count_params(build_model(entry.config)) == entry.published["params"], entry.name


def test_report001_table2_trains_at_the_reports_batch_size_and_settings():
    basic, *entries = reversed(study("report001-table2").entries())
    assert (basic.name, basic.config.arch, basic.config.hidden, basic.published["test_accuracy"]) == (
        "Basic Net", "mlp", (512,), 0.714)
    assert count_params(build_model(basic.config)) == 392 * 512 + 512 + 513  # 512 units, one sigmoid output
    for entry in entries:
        cfg = entry.config
        assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.lr_decay, cfg.dropout, cfg.head) == (5, 20, 0.001, 0.9, 0.2, (64,))
        assert not cfg.normalize  # the report never normalises
        assert cfg.alpha == (0.5 if ", aux" in entry.name else 1.0)
        assert cfg.arch == ("siamese" if ": sharing" in entry.name else "two_tower")


def _entry(name, accuracies, published=None, seconds=5.0):
    rounds = [{"round": r, "test_accuracy": a, "train_accuracy": 0.99, "train_seconds": seconds, "params": 10,
               "history": {"loss": [1.0]}} for r, a in enumerate(accuracies)]
    return {"name": name, "published": published, "per_round": rounds, **summarise(rounds)}


def test_z_is_the_difference_over_the_larger_std():
    e = _entry("a", [0.90, 0.92], {"test_accuracy": 0.95, "std": 0.01, "source": "x"})  # ours 0.91 ± 0.0141
    assert z_score(e) == pytest.approx((0.91 - 0.95) / 0.014142, rel=1e-3)
    e = _entry("a", [0.90, 0.92], {"test_accuracy": 0.95, "std": 0.05, "source": "x"})
    assert z_score(e) == pytest.approx((0.91 - 0.95) / 0.05)
    assert z_score(_entry("a", [0.9, 0.9])) is None


def test_the_strict_figure_is_the_difference_of_means_over_its_standard_error():
    e = _entry("a", [0.90, 0.92], {"test_accuracy": 0.95, "std": 0.01, "rounds": 10, "source": "x"})
    assert strict_score(e) == pytest.approx((0.91 - 0.95) / (0.01 ** 2 / 10 + 0.02 ** 2 / 2 / 2) ** 0.5)
    assert abs(strict_score(e)) > abs(z_score(e))  # over means of rounds, not one round's spread
    assert strict_score(_entry("a", [0.9, 0.92], {"test_accuracy": 0.95, "std": 0.01, "source": "x"})) is None


def test_every_published_cell_is_scored_parameters_compared_and_times_as_ratios():
    results = {"entries": [
        _entry("slow", [0.90, 0.92], {"test_accuracy": 0.95, "std": 0.01, "rounds": 10, "train_accuracy": 0.99,
                                      "train_std": 0.01, "params": 10, "seconds": 4.0, "source": "x"}, seconds=2.0),
        _entry("fast", [0.80, 0.82], {"test_accuracy": 0.80, "std": 0.01, "rounds": 10, "params": 12,
                                      "params_note": "two unused", "seconds": 2.0, "source": "x"}, seconds=3.0)]}
    cells = {c["cell"]: c for c in score_cells(results)}
    assert list(cells) == ["slow: test accuracy", "slow: train accuracy", "slow: parameters", "fast: test accuracy",
                           "fast: parameters", "fast: time ÷ slow's"]
    assert cells["slow: parameters"]["equal"]
    assert cells["fast: parameters"]["note"] == "+2, explained by our hypothesis: two unused"
    assert (cells["fast: time ÷ slow's"]["published"], cells["fast: time ÷ slow's"]["ours"]) == ("0.50", "1.50")
    counts = score_counts(list(cells.values()), ["✓ a", "✗ b"])
    assert counts == {"z": {"cells": 3, "within_2": 2}, "strict": {"cells": 3, "within_2": 2},
                      "params": {"cells": 2, "equal": 1, "explained": 1}, "claims": {"claims": 2, "hold": 1}}
    table = markdown_table(results, Study(lambda: [], 10, "", assumptions=("batch 100",)))
    assert "| slow: test accuracy | 0.950 ± 0.010 (n 10) | 0.910 ± 0.014 (n 2) | -2.8 | -3.8 |" in table
    assert ("Within 2: 2 of 3 by z, 2 of 3 by the strict figure; parameter counts: 1 of 2 equal, 1 explained by our "
            "hypothesis.") in table
    assert "- batch 100" in table


def test_report002_parameter_counts_differ_only_by_what_each_row_explains():
    for entry in (e for e in study("report002-table1").entries() if e.published):
        note, towers = entry.published["params_note"], 2 if entry.config.arch == "two_tower" else 1
        explained = towers * (192 * ("BatchNorm2d(32) and (64)" in note) + 20 * ("BatchNorm1d(10)" in note))
        assert entry.published["params"] - count_params(build_model(entry.config)) == explained, entry.name


def test_report004_parameter_counts_follow_its_layer_tables():
    nets = {e.name: count_params(build_model(e.config)) for e in study("report004-table4").entries()}
    tower = 196 * 200 + 200 + 400 + 100 * 256 + 256 + 512 + 128 * 10 + 10  # Table II, on one image
    assert nets["Baseline + Aux"] == tower + 20 * 2 + 2
    assert nets["Baseline"] == tower + 196 * 200 + 10 * 2 + 2  # on both images' 392 pixels, 10 -> 2


def test_the_normalisation_study_pairs_each_net_with_its_raw_pixel_twin():
    entries = {e.name: e for e in study("report000-normalisation").entries()}
    for entry in study("report000-table1").entries():
        raw = entries[f"{entry.name}, raw pixels"]
        assert entries[entry.name].config == entry.config and raw.config == entry.config.replace(normalize=False)


def test_claims_are_checked_against_our_numbers():
    results = {"entries": [_entry("big", [0.95, 0.96], seconds=2.0), _entry("small", [0.90, 0.91], seconds=1.0),
                           _entry("twin", [0.951, 0.955])]}
    lines = check_claims(results, (Claim("big beats small", better=(("big", "small"),)),
                                   Claim("small beats big", better=(("small", "big"),)),
                                   Claim("twins", similar=(("big", "twin"),)),
                                   Claim("small trains faster", faster=(("small", "big"),)),
                                   Claim("not run", better=(("big", "nowhere"),)),
                                   Claim("drops about 5 points", drop=(("big", "small", 0.05),)),
                                   Claim("drops about 15 points", drop=(("big", "small", 0.15),))))
    assert [line[0] for line in lines] == ["✓", "✗", "✓", "✓", "?", "✓", "✗"]
    assert "big 0.955 > small 0.905" in lines[0] and "+0.050 (the report: +0.15)" in lines[6]


def test_error_tables_show_errors_in_percent_like_report_004():
    results = {"entries": [_entry("CNN", [0.75, 0.77], {"test_accuracy": 0.761, "std": 0.0119, "rounds": 20,
                                                         "source": "004"})]}
    table = markdown_table(results, Study(lambda: [], 20, "", errors=True))
    assert "| CNN | 24.0 ± 1.4 |" in table  # error % = 100 (1 - accuracy); above the report: more errors
    assert "| CNN: test error % | 23.9 ± 1.2 (n 20) | 24.0 ± 1.4 (n 2) | +0.1 | +0.1 |" in table


DOCS = pathlib.Path(__file__).parent.parent / "docs" / "results"


@pytest.mark.parametrize("name", TABLES)
def test_each_committed_table_is_what_its_rounds_give(name):
    """docs/results/NAME: results.md, the scores and the figures are those its committed rounds give."""
    results = json.loads((DOCS / name / "results.json").read_text())
    chosen = study(name)
    assert [e["name"] for e in results["entries"]][:len(chosen.entries())] == [e.name for e in chosen.entries()]
    for entry in results["entries"]:
        assert {k: entry[k] for k in summarise(entry["per_round"])} == pytest.approx(summarise(entry["per_round"]))
    cells = score_cells(results, chosen.errors)
    assert results["scores"] == score_counts(cells, check_claims(results, chosen.claims))
    assert (DOCS / name / "results.md").read_text() == markdown_table(results, chosen)
    assert all((DOCS / name / figure.file).exists() for figure in chosen.figures)


def test_the_readme_counts_are_the_committed_tables():
    _, totals = tables_summary(str(DOCS), TABLES)
    assert (DOCS / "summary.md").read_text() == tables_summary(str(DOCS), TABLES)[0]
    sentence = (f"{totals['z']['within_2']} of their {totals['z']['cells']} accuracy cells are within 2 by z, "
                f"{totals['strict']['within_2']} of {totals['strict']['cells']} by the strict figure; "
                f"{totals['claims']['hold']} of "
                f"{totals['claims']['claims']} claims hold")
    for page in (DOCS.parent.parent / "README.md", DOCS.parent / "index.md"):
        assert sentence in " ".join(page.read_text().split()), page
