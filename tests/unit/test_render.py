"""tests/render.py, the headless-Chromium helper: it reports console errors, exceptions and failed loads,
returns the DOM Chromium built and a PNG of the whole page; without Chromium it fails under CI=true."""

import shutil
from pathlib import Path

import pytest

from tests import render as render_module
from tests.render import render, require_chromium

PAGE = """<!doctype html><html><head><title>t</title></head><body>
<p id="made-by-script"></p>
<script>
document.getElementById("made-by-script").textContent = "hello from the page";
console.error("a console error");
console.log("not an error");
</script>
<img src="no-such-picture.png">
<div style="height: 1500px">tall</div>
<script>undefinedFunction();</script>
</body></html>
"""


def test_errors_dom_and_screenshot(tmp_path: Path) -> None:
    require_chromium()
    (tmp_path / "page.html").write_text(PAGE)
    result = render(tmp_path / "page.html", width=800)
    assert "hello from the page" in result.dom  # the DOM after scripts ran, not the file
    joined = "\n".join(result.errors)
    assert "console: a console error" in joined and "not an error" not in joined
    assert "undefinedFunction" in joined  # an uncaught exception
    assert "no-such-picture.png" in joined  # a failed load
    assert result.png.startswith(b"\x89PNG") and result.width == 800 and result.height > 1500


def test_a_clean_svg_has_no_errors(tmp_path: Path) -> None:
    require_chromium()
    (tmp_path / "x.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="300" height="120">'
                                    '<rect width="300" height="120" fill="#abc"/></svg>')
    result = render(tmp_path / "x.svg")
    assert result.errors == [] and result.dom.startswith("<svg")
    assert (result.width, result.height) == (300, 120)


def test_no_chromium_fails_under_ci(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: failing instead of skipping"):
        render_module.require_chromium()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        render_module.require_chromium()
