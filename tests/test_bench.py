import json
import shutil

import pytest

from dann.cli import main
from dann.config import MethodConfig
from dann.plan import plan_bench
from dann.training import bench
from dann.training.bench import INPUTS, run_bench

KEYS = {"supervised_img_s", "dann_img_s", "ratio", "data_wait_fraction", "peak_memory_mb", "device"}


def test_bench_json_has_the_documented_keys(capsys):
    assert main(["bench", "--backbone", "lenet", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert KEYS <= out.keys()
    assert out["supervised_img_s"] > 0 and out["dann_img_s"] > 0 and out["peak_memory_mb"] > 0
    assert 0 < out["data_wait_fraction"] < 1 and out["device"].startswith("cpu")


def test_bench_counts_the_images_of_the_fastest_round_of_each_step(monkeypatch):
    """With the clock known: B = 4 per domain and 2 steps a round, so each timed round sees 16 images (the supervised
    step 2B source images, the DANN step B + B); the fastest of the 3 rounds counts, with its own data wait."""
    rounds = {False: [(3.0, 0.1), (2.0, 0.5), (5.0, 0.2)], True: [(8.0, 0.1), (4.5, 0.2), (4.0, 1.0)]}  # (s, data s)

    def timed(self, steps):  # Mode.run: the DANN mode is the one reading target batches
        return (0.0, 0.0) if steps == 0 else rounds[self.method.uses_target].pop(0)

    monkeypatch.setattr(bench.Mode, "run", timed)
    out = run_bench("lenet", plan_bench("lenet", INPUTS["lenet"]), batch_size=4, steps=2, warmup=0, rounds=3)
    assert out["supervised_img_s"] == 16 / 2.0 and out["dann_img_s"] == 16 / 4.0
    assert out["ratio"] == 2.0 and out["data_wait_fraction"] == 1.0 / 4.0
    assert rounds == {False: [], True: []}  # every round was timed


def test_bench_runs_the_trainer_step_in_bf16_and_channels_last():
    plan = plan_bench("lenet", INPUTS["lenet"], precision="bf16", channels_last=True)
    out = run_bench("lenet", plan, batch_size=4, steps=1, warmup=0, rounds=1)
    assert out["precision"] == "bf16" and out["channels_last"] and out["dann_img_s"] > 0


def test_bench_refuses_unknown_backbones_and_precisions(capsys):
    assert main(["bench", "--backbone", "vgg", "--json"]) == 2
    assert "unknown backbone 'vgg'; choose one of lenet, resnet18, resnet50, mlp" in capsys.readouterr().err
    assert main(["bench", "--precision", "fp8"]) == 2
    assert "--precision must be auto | fp32 | bf16 | fp16" in capsys.readouterr().err


def test_bench_streams_image_files_through_the_training_loader(shape_folders, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DANN_CACHE", str(tmp_path / "cache"))  # built by this bench, whatever ran before
    args = ["bench", "--backbone", "lenet", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--rounds", "1"]
    assert main([*args, "--images", str(shape_folders["source"]), "--workers", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input"] == [3, 28, 28]
    assert out["data"] == f"image files: {shape_folders['source']} (DataLoader workers: DANN 2 × 1, supervised 1)"
    assert out["dann_img_s"] > 0 and 0 < out["data_wait_fraction"] < 1
    cache = out["cache"]  # the same steps read from the folder's decoded-image cache
    assert cache["dann_img_s"] > 0 and 0 < cache["data_wait_fraction"] < 1 and cache["side"] == 40
    assert cache["speedup"] == pytest.approx(cache["dann_img_s"] / out["dann_img_s"])
    assert cache["build_s"] > 0 and cache["build_cores"] == 1  # 24 files: decoded in this process, one core
    assert cache["build_img_s_per_core"] == pytest.approx(cache["build_img_s"])
    assert cache["size_mb"] == pytest.approx(24 * 40 * 40 * 3 / 2**20) and cache["path"].endswith(".npy")
    assert main([*args, "--images", str(shape_folders["source"] / "missing")]) == 2
    assert f"--images {shape_folders['source'] / 'missing'} is not a folder" in capsys.readouterr().err
    assert main([*args, "--images", str(shape_folders["source"]), "--backbone", "mlp"]) == 2
    assert "--images needs an image backbone, not 'mlp'" in capsys.readouterr().err
    broken = shutil.copytree(shape_folders["source"], tmp_path / "broken")
    bad = next((broken / "circle").glob("*.jpg"))
    bad.write_bytes(b"\xff\xd8\xff broken")
    assert main([*args, "--images", str(broken), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: cannot read this image file" in err and "pass --skip-bad-images" in err
    assert main([*args, "--images", str(broken), "--workers", "0", "--skip-bad-images", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cache"]["dann_img_s"] > 0


@pytest.mark.parametrize(("given", "used"), [([], 1), (["--threads", "2"], 2), (["--threads", "1"], 1)])
def test_bench_times_at_the_thread_count_training_would_use_and_puts_the_callers_back(given, used, capsys):
    import torch

    before = torch.get_num_threads()
    args = ["bench", "--backbone", "lenet", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--rounds", "1"]
    assert main([*args, *given, "--json"]) == 0  # lenet: auto picks one thread, as train.threads: auto does
    assert json.loads(capsys.readouterr().out)["device"].endswith(f", {used} threads")
    assert torch.get_num_threads() == before
    assert main([*args, "--threads", "two"]) == 2
    assert "--threads must be auto or an integer >= 0, got 'two'" in capsys.readouterr().err


def test_bench_under_auto_picks_the_precision_a_dann_run_picks(monkeypatch):
    import dann.training.precision as precision_module
    from dann.methods.base import keeps_fp32
    from dann.plan import create_method

    monkeypatch.setattr(precision_module, "cpu_capabilities", lambda: {"avx512_bf16": True})
    dann_run = "fp32" if keeps_fp32(create_method(MethodConfig(name="dann"))) else "bf16"
    assert dann_run == "bf16"  # measured: DANN alone trains in bf16 where bfloat16 is native
    assert plan_bench("lenet", INPUTS["lenet"], device="cpu").precision == dann_run
    monkeypatch.setattr(precision_module, "cpu_capabilities", lambda: {})
    assert plan_bench("lenet", INPUTS["lenet"], device="cpu").precision == "fp32"  # emulated bf16: never
