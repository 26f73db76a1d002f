"""`nested-diffusion generate` end to end on the embedded digit model (few steps)."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from nested_diffusion.cli import main


def run_cli(*args):
    return main(["generate", *map(str, args)])


def test_generate_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli("--outer", 3, "--inner", 2, "--class", "3,5", "--out", out, "--compare-vanilla", "--check") == 0
    printed = capsys.readouterr().out
    assert str(out / "contact_sheet.png") in printed and "check (nested)" in printed
    for i in range(2):
        names = sorted(p.name for p in (out / "frames" / f"sample-{i:02d}").iterdir())
        assert names == ["nested-nfe-002.png", "nested-nfe-004.png", "nested-nfe-006.png",
                         "vanilla-nfe-002.png", "vanilla-nfe-004.png", "vanilla-nfe-006.png"]
        with Image.open(out / "frames" / f"sample-{i:02d}" / "nested-nfe-006.png") as im:
            assert im.size == (28, 28) and im.mode == "L"
    with Image.open(out / "contact_sheet.png") as sheet:
        sheet.verify()
    with Image.open(out / "anytime.gif") as gif:
        assert gif.n_frames == 3
    summary = json.loads((out / "run.json").read_text())
    assert summary["nfe"] == [2, 4, 6] and summary["class_labels"] == [3, 5]
    assert summary["check"]["nested"]["total"] == 2 and len(summary["check"]["vanilla"]["predicted"]) == 2
    # a second run replaces its own earlier output
    assert run_cli("--outer", 1, "--inner", 1, "--class", 7, "--out", out) == 0
    assert json.loads((out / "run.json").read_text())["nfe"] == [1]
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["sample-00"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_budget_plans_steps(tmp_path):
    out = tmp_path / "b"
    assert run_cli("--budget", 9, "--class", 1, "--out", out) == 0  # the planned layout: below 20 NFEs the ladder
    run = json.loads((out / "run.json").read_text())
    assert run["nfe"] == [1, 2, 3, 4, 7, 9] and run["inner_sampler"] == "unipc"
    assert run_cli("--budget", 30, "--class", 1, "--out", out) == 0
    assert json.loads((out / "run.json").read_text())["nfe"] == [3, 15, 30]
    assert run_cli("--budget", 9, "--inner", 3, "--class", 1, "--out", out) == 0
    assert json.loads((out / "run.json").read_text())["nfe"] == [3, 6, 9]


def test_deadline_with_no_complete_frame_writes_nothing(tmp_path, capsys):
    out = tmp_path / "d"
    assert run_cli("--deadline", "1e-9", "--class", 1, "--out", out) == 2
    assert "no frame completed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,message", [
    (["--class", "12"], "--class indices must lie in [0, 9]"),
    (["--model", "/no/such/folder"], "does not exist"),
    (["--prompt", "a cat"], "not text-conditional"),
    (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "nonsense"], "--device"),
])
def test_bad_values_fail_cleanly(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert run_cli(*args, "--outer", 1, "--inner", 1, "--out", out) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--outer", "0"], ["--inner", "x"], ["--inner-sampler", "euler"],
                                  ["--dtype", "float8"], ["--class", "a-b"], ["--deadline", "-1"],
                                  ["--inner-eta", "2"], ["--guidance", "nan"]])
def test_bad_options_exit_2(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as e:
        run_cli(*args, "--out", tmp_path / "out")
    assert e.value.code == 2 and "error" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_output_path_checks(tmp_path, capsys):
    target = tmp_path / "file.png"
    target.write_text("keep me")
    assert run_cli("--outer", 1, "--inner", 1, "--out", target) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "keep me"
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    assert run_cli("--outer", 1, "--inner", 1, "--out", foreign) == 2
    assert "non-empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_cli_start_is_lazy_and_module_runs():
    code = ("import sys, nested_diffusion.cli as c; c.build_parser(); "
            "print('torch' in sys.modules, 'diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    res = subprocess.run([sys.executable, "-m", "nested_diffusion", "generate", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for option in ("--model", "--class", "--prompt", "--outer", "--inner", "--inner-sampler", "--guidance", "--seed",
                   "--num-images", "--out", "--device", "--dtype", "--budget", "--deadline", "--compare-vanilla"):
        assert option in res.stdout
    assert "(default: 0)" in res.stdout  # defaults are documented


def test_embedded_model_loads_offline():
    code = ("from nested_diffusion import NestedPipeline; p = NestedPipeline.from_pretrained(); a = p.adapter; "
            "print(a.num_classes, a.null_class, a.sample_size, a.prediction_type, a.default_guidance, a.clip_sample)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["10", "10", "(28,", "28)", "epsilon", "1.5", "1.0"]
    from nested_diffusion.models import embedded_model_path

    files = [p for p in embedded_model_path().rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20e6
    assert any(p.suffix == ".safetensors" for p in files) and not any(p.suffix in (".bin", ".pt", ".pkl") for p in files)


def test_first_run_prints_only_its_own_lines(tmp_path):
    """No deprecation warning, no accelerate advice, no diffusers loading bar: stderr holds only the
    command's progress bar (warnings shown as Python shows them by default, and more)."""
    res = subprocess.run([sys.executable, "-W", "default", "-m", "nested_diffusion", "generate", "--class", "1",
                          "--budget", "3", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(line.startswith("nested:") for line in lines), lines
    assert res.stdout.startswith("nested 3x1/1/1: 3 frames × 1 images (3 NFEs")
    from nested_diffusion import plan_layout
    from nested_diffusion.schedules import make_alphas_cumprod

    restarts = plan_layout(3, make_alphas_cumprod("linear")).outer_timesteps[1:]  # the embedded model's schedule
    assert f"re-noised to t = {', '.join(map(str, restarts))}\n" in res.stdout


def test_library_errors_name_the_flags(tmp_path, capsys):
    from nested_diffusion.cli.options import flag_names

    flags = {"inner_steps": "--inner", "prompt": "--prompt", "negative_prompt": "--negative-prompt"}
    assert flag_names("inner_steps must be >= 1; pass prompt or negative_prompt, not prompts",
                      flags) == "--inner must be >= 1; pass --prompt or --negative-prompt, not prompts"
    assert run_cli("--budget", 5, "--inner", 10, "--out", tmp_path / "o") == 2
    assert "--budget 5 is smaller than one outer step (--inner = 10 NFEs)" in capsys.readouterr().err
    assert run_cli("--height", 7, "--class", 1, "--out", tmp_path / "o") == 2
    assert "--height must be a positive multiple of 4 pixels" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
