"""``nested-diffusion edit`` on the embedded digit model, and the one image loader (edit, restore --input, the
studio's uploads): formats, pixel limits and broken files answered before anything is decoded or written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nested_diffusion.cli import main
from nested_diffusion.images import load_image


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    from nested_diffusion.data import load_mnist5k

    folder = tmp_path_factory.mktemp("edit-inputs")
    images, labels = load_mnist5k("test")
    Image.fromarray(images[0]).save(folder / "digit.png")
    mask = np.zeros((28, 28), dtype=np.uint8)
    mask[:14] = 255  # repaint the top half
    Image.fromarray(mask).save(folder / "mask.png")
    return folder


def test_edit_inpaints_a_digit_and_keeps_the_rest_exactly(digit, tmp_path, capsys):
    out = tmp_path / "inpaint"
    assert main(["edit", "--input", str(digit / "digit.png"), "--mask", str(digit / "mask.png"), "--class", "7",
                 "--budget", "20", "--compare-vanilla", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == "nested DDRM" and run["nfe"] == [2, 4, 6, 10, 15, 20]
    assert (out / "contact_sheet.png").is_file() and (out / "anytime.gif").is_file()
    source = np.asarray(Image.open(digit / "digit.png"))
    for nfe in run["nfe"]:  # outside the mask every nested frame keeps the input, exactly (a pixel model)
        frame = np.asarray(Image.open(out / "frames" / "sample-00" / f"nested-nfe-{nfe:03d}.png").convert("L"))
        assert np.abs(frame[14:].astype(int) - source[14:].astype(int)).max() <= 1
    assert "inpainting, nested DDRM" in capsys.readouterr().out
    masked = np.asarray(Image.open(out / "frames" / "sample-00" / "masked.png").convert("RGB")).astype(int)
    assert (masked[:14, :, 0] - masked[:14, :, 1] >= 90).all()  # the region to repaint shows red
    assert (masked[14:] == source[14:, :, None]).all()          # the kept region as it is


def test_edit_image_to_image(digit, tmp_path):
    out = tmp_path / "img2img"
    assert main(["edit", "--input", str(digit / "digit.png"), "--strength", "0.5", "--class", "2", "--budget", "10",
                 "--num-images", "2", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["strength"] == 0.5 and run["nfe"][-1] == 10 and run["outer_timesteps"][0] <= 499
    assert len(list((out / "frames").rglob("nested-nfe-*.png"))) == 2 * len(run["nfe"])


@pytest.mark.parametrize("args,message", [
    (["--input", "/etc/passwd"], "--input is not a PNG, JPEG or WebP file"),
    (["--input", "/nonexistent.png"], "is not a file"),
    (["--input", "{d}/truncated.png"], "truncated or corrupt"),
    (["--input", "{digit}", "--mask", "{d}/small.png"], "--mask must have the input's size"),
    (["--input", "{digit}", "--mask", "{mask}", "--strength", "0.5"], "--strength: inpainting on a"),
    (["--input", "{d}/big.png"], "pixels; at most"),
    (["--input", "{d}/anim.gif"], "is not a PNG, JPEG or WebP file"),
])
def test_bad_inputs_write_nothing(digit, tmp_path, capsys, args, message):
    Image.fromarray(np.zeros((14, 14), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "truncated.png").write_bytes((digit / "digit.png").read_bytes()[:120])
    Image.new("L", (5000, 4000)).save(tmp_path / "big.png")
    Image.new("L", (28, 28)).save(tmp_path / "anim.gif")
    fill = {"d": str(tmp_path), "digit": str(digit / "digit.png"), "mask": str(digit / "mask.png")}
    out = tmp_path / "out"
    assert main(["edit", *[a.format(**fill) for a in args], "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_strength_outside_the_range_is_an_argument_error(digit, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["edit", "--input", str(digit / "digit.png"), "--strength", "1.5", "--out", str(tmp_path / "o")])
    assert "--strength: must be a number in (0, 1]" in capsys.readouterr().err


def test_restore_input_goes_through_the_loader(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["restore", "--task", "sr4", "--input", "/etc/passwd", "--out", str(out)]) == 2
    assert "--input is not a PNG, JPEG or WebP file" in capsys.readouterr().err and not out.exists()


def test_load_image_checks_the_header_before_decoding(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (5000, 4000)).save(path)
    with pytest.raises(ValueError, match="upload is 5000×4000 = 20000000 pixels; at most"):
        load_image(path.read_bytes(), name="upload")
    assert load_image(path, max_pixels=5000 * 4000).size == (5000, 4000)
    Image.new("RGB", (8, 8)).save(tmp_path / "x.webp")
    assert load_image(tmp_path / "x.webp", mode="L").mode == "L"
