"""kdbench.results.callbacks: at the end of a Hydra multirun, the sweep's leaderboard is printed and written."""
import logging

from omegaconf import OmegaConf

from kdbench.results.aggregate import aggregate, failed_runs, find_results, with_published
from kdbench.results.callbacks import LeaderboardCallback
from kdbench.results.render import failed_markdown, to_markdown
from results_runs import runs  # noqa: F401 (fixture)


def test_leaderboard_written_next_to_the_runs(runs, capsys):
    LeaderboardCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(runs)}}}))
    records = find_results([runs])
    expected = to_markdown(with_published(aggregate(records))) + failed_markdown(failed_runs(records))
    assert (runs / "leaderboard.md").read_text() == expected
    assert (runs / "leaderboard.csv").read_text().startswith("dataset,teacher,student,method,")
    assert not list(runs.glob(".leaderboard*"))  # no temporary files left
    assert "kdbench leaderboard" in capsys.readouterr().out


def test_no_results_no_leaderboard(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        LeaderboardCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert "no result.json" in caplog.text and not list(tmp_path.iterdir())
