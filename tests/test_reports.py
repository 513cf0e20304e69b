"""The reports as data: every table's cells and rounds, their parameter counts, z-scores and claims."""
import pytest

from mnistcompare.experiments import check_claims, markdown_table, summarise, z_score
from mnistcompare.models import build_model, count_params
from mnistcompare.reports import ALIASES, PRESETS, STUDIES, TABLES, Claim, Study, preset, study


@pytest.mark.parametrize("name, cells, rounds", [
    ("report000-table1", 3, 15), ("report001-table2", 8, 10), ("report002-table1", 6, 10),
    ("report003-table1", 14, 10), ("report004-table4", 4, 20)])
def test_each_table_has_its_reports_cells_and_rounds(name, cells, rounds):
    chosen = study(name)
    entries = chosen.entries()
    assert len(entries) == cells and chosen.rounds == rounds
    assert all(e.published and "test_accuracy" in e.published and e.config.validate() for e in entries)
    assert all(e.config.numerics == "torch" for e in entries)  # the reports' framework
    names = {e.name for e in entries}
    for claim in chosen.claims:
        assert {n for pair in claim.better + claim.similar + claim.faster for n in pair} <= names


def test_every_table_is_a_study_and_old_names_still_work():
    assert set(TABLES) == {"report000-table1", "report001-table2", "report002-table1", "report003-table1",
                           "report004-table4"}
    assert study("sharing-aux") is STUDIES["report001-table2"] and study("bn-dropout") is STUDIES["report002-table1"]
    assert set(ALIASES.values()) <= set(STUDIES)
    assert all(preset(name).numerics == "torch" for name in PRESETS if name.startswith("report"))


def test_report000_table1_nets_have_the_published_parameter_counts():
    for entry in study("report000-table1").entries():
        assert count_params(build_model(entry.config)) == entry.published["params"], entry.name


def test_report001_table2_trains_at_the_reports_batch_size_and_settings():
    for entry in study("report001-table2").entries():
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


def test_claims_are_checked_against_our_numbers():
    results = {"entries": [_entry("big", [0.95, 0.96], seconds=2.0), _entry("small", [0.90, 0.91], seconds=1.0),
                           _entry("twin", [0.951, 0.955])]}
    lines = check_claims(results, (Claim("big beats small", better=(("big", "small"),)),
                                   Claim("small beats big", better=(("small", "big"),)),
                                   Claim("twins", similar=(("big", "twin"),)),
                                   Claim("small trains faster", faster=(("small", "big"),)),
                                   Claim("not run", better=(("big", "nowhere"),))))
    assert [line[0] for line in lines] == ["✓", "✗", "✓", "✓", "?"]
    assert "big 0.955 > small 0.905" in lines[0]


def test_error_tables_show_errors_in_percent_like_report_004():
    results = {"entries": [_entry("CNN", [0.75, 0.77], {"test_accuracy": 0.761, "std": 0.0119, "source": "004"})]}
    table = markdown_table(results, Study(lambda: [], 20, "", errors=True))
    assert "test error %" in table and "| 24.0 ± 1.4 | 23.9 ± 1.2 (004) | +0.1 |" in table
