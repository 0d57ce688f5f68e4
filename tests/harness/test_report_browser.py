"""The report opens from disk in headless Chromium and its heatmaps render (no network)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.report import build_report
from tests.harness.test_report import write_canned_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UNDEFINED_GREY = (189, 189, 189)  # harness.report.figures.UNDEFINED_GREY

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (`make test` installs it)"
)


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = write_canned_run(tmp_path_factory.mktemp("browser"))
    return build_report(run).html


def test_the_page_and_its_heatmaps_render(tmp_path, report):
    from PIL import Image

    shot = tmp_path / "report.png"
    done = chromium(tmp_path, report, f"--screenshot={shot}", "--window-size=1200,5000")
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    non_white = (pixels != 255).any(axis=1).mean()
    assert non_white > 0.05, f"the screenshot is blank ({non_white:.1%} non-white pixels)"

    def share(target) -> float:
        return (np.abs(pixels - np.array(target)).max(axis=1) <= 6).mean()

    assert share(UNDEFINED_GREY) > 0.001, "no grey (undefined CTS) cells drawn"
    r, g, b = pixels.T
    red = ((r - g > 80) & (r - b > 60)).mean()  # transfer (CTS > 0) in RdBu_r
    assert red > 0.005, f"no CTS cells drawn in colour ({red:.2%} red pixels)"


def test_every_heatmap_is_drawn_by_plotly_offline(tmp_path, report):
    done = chromium(tmp_path, report, "--dump-dom", "--virtual-time-budget=5000")
    dom = done.stdout
    assert "CMAP report" in dom
    # two heatmap traces (grey undefined layer + CTS) per example prompt (3 of each kind x
    # suite: 12), and the CTS summary heatmap
    assert dom.count('class="hm"') >= 2 * 12 + 1, done.stderr[-2000:]
