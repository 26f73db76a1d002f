#!/usr/bin/env python
"""Regenerate docs/studio.png: the studio mid-run with a fork, in Debian's Chromium (Playwright).

A 2×2 batch (digits 0–3, seed 0) with the vanilla x̂0-preview lane; after the frame at 20 NFEs,
image 2 is continued as four variations (branch b1); the picture is taken while they run.
With ``--edit``: docs/studio_edit.png, an inpainting edit — docs/edit/digit.png uploaded, its top half
painted with the mouse, four unconditional fills by nested DDRM (budget 200), mid-run.

    OMP_NUM_THREADS=1 python scripts/studio_screenshot.py            # → docs/studio.png
    OMP_NUM_THREADS=1 python scripts/studio_screenshot.py --edit     # → docs/studio_edit.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="default: docs/studio.png (docs/studio_edit.png)")
    parser.add_argument("--edit", action="store_true", help="an inpainting edit instead of a fork")
    args = parser.parse_args()
    args.out = args.out or ROOT / "docs" / ("studio_edit.png" if args.edit else "studio.png")
    from playwright.sync_api import sync_playwright

    from nested_diffusion.studio.app import create_app
    from studio_support import LiveServer, digits

    with LiveServer(create_app(digits())) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 940}, device_scale_factor=1)
        page.set_default_timeout(120_000)
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready=true]")
        if args.edit:
            edit(page)
        else:
            fork(page)
        time.sleep(0.2)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"saved {args.out}")


def fork(page) -> None:
    page.get_by_test_id("condition-class").select_option("*")
    page.get_by_test_id("num-images").fill("4")
    page.get_by_test_id("compare").check()
    page.get_by_test_id("start").click()
    b0 = page.locator("[data-branch=b0]")
    page.wait_for_function("() => +document.querySelector('[data-branch=b0] [data-testid=nfe]')?.textContent >= 20")
    b0.get_by_test_id("fork-count").fill("4")
    b0.get_by_test_id("vary").nth(2).click()
    page.wait_for_function("() => document.querySelectorAll('[data-branch=b1] .timeline li').length >= 3")
    page.wait_for_function("() => document.querySelectorAll('[data-branch=v0] .timeline li').length >= 4")


def edit(page) -> None:
    page.get_by_test_id("edit-upload").set_input_files(str(ROOT / "docs" / "edit" / "digit.png"))
    page.wait_for_selector("#edit-area:not([hidden])")
    page.get_by_test_id("brush-size").evaluate("el => { el.value = 4; el.dispatchEvent(new Event('input')); }")
    box = page.get_by_test_id("mask-canvas").bounding_box()
    at = lambda fx, fy: (box["x"] + fx * box["width"], box["y"] + fy * box["height"])  # noqa: E731
    page.mouse.move(*at(0.05, 0.05))
    page.mouse.down()
    for i in range(10):  # horizontal strokes over the top half
        y = 0.05 + 0.045 * i
        page.mouse.move(*at(0.95, y), steps=8)
        page.mouse.move(*at(0.05, y), steps=8)
    page.mouse.up()
    page.get_by_test_id("condition-class").select_option("")  # unconditional: the kept half decides the digit
    page.get_by_test_id("num-images").fill("4")
    page.get_by_test_id("compare").check()
    page.get_by_test_id("budget").fill("200")
    page.get_by_test_id("start").click()
    page.wait_for_function("() => +(document.querySelector('[data-branch=b0] [data-testid=nfe]')?.textContent || 0)"
                           " >= 60")  # mid-run: three of six frames


if __name__ == "__main__":
    main()
