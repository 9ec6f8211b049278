"""`coreg simulate` and `coreg report` end to end, and their one-line errors."""

from __future__ import annotations

import json

from click.testing import CliRunner

from coreg.cli import main


def test_simulate_flip_then_report(tmp_path) -> None:
    out = tmp_path / "a.npz"
    r = CliRunner().invoke(main, ["simulate", "--kind", "flip", "--data", "digits", "--q", "0.1", "--eta", "0.2",
                                  "--seed", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["report", str(out), "--data", "digits", "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout[r.stdout.index("{"):])
    # E|S| = 1 + q (K - 1) = 1.9; eta ~ 0.2 (binomial error on 1,438 rows ~ 0.011)
    assert abs(st["avg_set_size"] - 1.9) < 0.06
    assert abs(st["eta"] - 0.2) < 0.04
    r = CliRunner().invoke(main, ["report", str(out), "--data", "digits"])
    assert "average set size" in r.output and "eta" in r.output


def test_errors_are_one_line(tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["simulate", "--kind", "flip", "--data", "nope", "--out", str(tmp_path / "a.npz")])
    assert r.exit_code == 2 and "unknown dataset 'nope'" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["simulate", "--kind", "flip", "--data", "digits", "--q", "1.5", "--out",
                             str(tmp_path / "a.npz")])
    assert r.exit_code == 2 and "partial rate" in r.output
    assert not (tmp_path / "a.npz").exists()
    r = runner.invoke(main, ["report", str(tmp_path / "missing.npz"), "--data", "digits"])
    assert r.exit_code == 2 and "does not exist" in r.output
    good = tmp_path / "g.npz"
    runner.invoke(main, ["simulate", "--kind", "flip", "--data", "digits", "--out", str(good)])
    r = runner.invoke(main, ["report", str(good), "--data", "digits", "--split-seed", "5"])
    assert r.exit_code == 2 and "other data" in r.output
