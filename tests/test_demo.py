from dann.cli import main


def test_demo_on_moons_prints_the_table_and_draws_the_boundaries(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--tasks", "moons"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    lines = out.splitlines()  # progress while it trains: a line as each run starts and ends, and its bar
    starting = lines.index("  moons   source_only  training 3000 steps ...")
    assert lines[starting + 1].startswith("  moons   source_only  done in ")
    assert "3000/3000" in captured.err
    assert "source_only" in out and "gain" in out and "target labels are used only" in out
    picture = tmp_path / "moons_boundaries.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000
    assert (tmp_path / "moons-dann/checkpoints/last.pt").is_file()
    assert main(["demo", "--out", str(tmp_path), "--tasks", "moons"]) == 2  # never overwrites earlier runs
