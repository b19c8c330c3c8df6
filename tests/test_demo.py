from dann.cli import main


def test_demo_on_moons_prints_the_table_and_draws_the_boundaries(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--tasks", "moons"]) == 0
    out = capsys.readouterr().out
    assert "source_only" in out and "gain" in out and "target labels are used only" in out
    picture = tmp_path / "moons_boundaries.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000
    assert (tmp_path / "moons-dann/checkpoints/last.pt").is_file()
    assert main(["demo", "--out", str(tmp_path), "--tasks", "moons"]) == 2  # never overwrites earlier runs
