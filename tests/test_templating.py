"""The Jinja2 environment of the HTML pages: autoescaping, shared macros, templates shipped as package data."""

from __future__ import annotations

import html
from importlib import resources

import jinja2
import numpy as np
import pytest

from catalog_render import evaluation, templating

HOSTILE = "<script>alert('x')</script> & \"q\""


def test_templates_are_package_data():
    names = {p.name for p in resources.files("catalog_render").joinpath("templates").iterdir()}
    assert {"base.html", "macros.html", "report.html", "report.css", "evaluation.html"} <= names


def test_every_value_is_escaped_like_html_escape():
    env = templating.environment()
    page = env.from_string("{{ x }}|{{ nothing }}|{{ n|num }}|{{ k|pct(3) }}").render(x=HOSTILE, nothing=None, n=2 / 3, k=1)
    assert page == f"{html.escape(HOSTILE, quote=True)}||0.6667|33.3%"
    assert "<script>" not in page


def test_macros_escape_their_arguments_once():
    m = templating.environment().get_template("macros.html").module
    cell = str(m.image_cell((None, HOSTILE), "alt", "render"))
    assert cell == f'<div class="ph render" title="{html.escape(HOSTILE)}">render:<br>{html.escape(HOSTILE)}</div>'
    badge = str(m.verdict_badge({"verdict": "reject", "reviewer": "ann", "comment": HOSTILE}))
    assert badge == f'<div class="verdict reject" title="rejected by ann: {html.escape(HOSTILE)}">rejected \u00b7 ann</div>'
    assert str(m.value({"a": [1, 2.5], "b": None, "c": {}})) == "a: 1, 2.5<br>b: \u2013<br>c: \u2013"


def test_a_missing_context_name_is_an_error():
    with pytest.raises(jinja2.UndefinedError):
        templating.render("report.html", run_id="r")


def test_evaluation_page_escapes_untrusted_text():
    r = {"model": {"model_id": HOSTILE, "family": "gan", "uri": "/m", "width": 8, "height": 8},
         "catalog": {"uri": "/c", "held_out": 1, "holdout": 0.5, "split_seed": 0, "evaluated": 1}, "warnings": [HOSTILE],
         "rendered": 1, "not_rendered": {"count": 0}, "leakage": {"held_out_in_training": 0},
         "reference_metrics": {"applicable": False, "reason": "n/a"}, "render_vs_photo": {"psnr_db": {"median": 9.5}, "ssim": {"median": None}, "lpips": {"median": 0.5}, "dists": {"computed": False, "skipped_reason": "<x>"}},
         "category_fidelity": {"accuracy_render": None, "accuracy_real": None, "products": 0, "majority_class_baseline": None},
         "colour_fidelity": {"match_share_render": None, "match_share_real": None, "products_judged": 0, "mean_delta_e00_render": None,
                             "mean_delta_e00_real": None},
         "frechet_distance": {"computed": False, "skipped_reason": "too few"},
         "timing": {"sampling_seconds_per_image": 0.5, "training_wall_seconds": None, "training_steps": None}}
    page = evaluation.render_html(r, [(HOSTILE, np.zeros((8, 8, 3), np.uint8), None)])
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert page.count(html.escape(HOSTILE)) == 4  # title, heading, warning, caption
    assert "<tr><td>render vs photo PSNR (median)</td><td>9.5</td>" in page and "not rendered" in page
    assert page.count('src="data:image/png;base64,') == 1
