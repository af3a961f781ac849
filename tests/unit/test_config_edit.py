"""set_scaling(): edits keep every comment and line, and a bad value writes nothing."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
import yaml

from raylab.cluster.config import render, write_rendered
from raylab.cluster.edit import set_scaling
from raylab.errors import RaylabError
from tests.conftest import ROOT
from tests.unit.test_config_rules import OUTPUTS


@pytest.fixture
def template(tmp_path: Path) -> Path:
    p = tmp_path / "ray-cluster.yaml"
    shutil.copy(ROOT / "configs" / "ray-cluster.yaml", p)
    return p


def changed_lines(before: str, after: str) -> list[str]:
    return [ln for ln in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def test_edit_changes_only_the_values_and_keeps_comments(template: Path) -> None:
    before = template.read_text()
    changes = set_scaling(template, upscaling_speed=10, idle_timeout_minutes=0.5, max_workers=20)
    assert changes == ["upscaling_speed: 1.0 -> 10", "idle_timeout_minutes: 5 -> 0.5",
                       "max_workers: 30 -> 20"]
    after = template.read_text()
    assert changed_lines(before, after) == [
        "-max_workers: 30", "+max_workers: 20",
        "-upscaling_speed: 1.0", "+upscaling_speed: 10",
        "-idle_timeout_minutes: 5", "+idle_timeout_minutes: 0.5",
    ]
    assert [ln for ln in after.splitlines() if "#" in ln] == [ln for ln in before.splitlines() if "#" in ln]


def test_edit_a_node_type_keeps_trailing_comments(template: Path) -> None:
    before = template.read_text()
    assert set_scaling(template, node_type="ray.worker.spot", min_workers=1, max_workers=5) == [
        "available_node_types[ray.worker.spot].min_workers: 0 -> 1",
        "available_node_types[ray.worker.spot].max_workers: 0 -> 5",
    ]
    diff = changed_lines(before, template.read_text())
    assert diff == ["-    min_workers: 0", "-    max_workers: 0",
                    "+    min_workers: 1", "+    max_workers: 5"]
    data = yaml.safe_load(template.read_text())
    assert data["available_node_types"]["ray.worker.spot"]["max_workers"] == 5


def test_same_value_changes_nothing(template: Path) -> None:
    mtime = template.stat().st_mtime_ns
    assert set_scaling(template, idle_timeout_minutes=5) == []
    assert template.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"upscaling_speed": -1}, "upscaling_speed: -1 is negative"),
    ({"idle_timeout_minutes": "soon"}, "idle_timeout_minutes: 'soon' is not a number"),
    ({"max_workers": 2.5}, "max_workers: 2.5 is not a whole number"),
    ({"node_type": "ray.worker.ondemand", "min_workers": 40}, "min_workers 40 is above max_workers 30"),
    ({"node_type": "ray.worker.ondemand", "max_workers": -1}, "max_workers: -1 is negative"),
    ({"node_type": "ray.worker.spt", "max_workers": 3}, "no node type 'ray.worker.spt'"),
    ({"min_workers": 2}, "min_workers needs a node type"),
    ({}, "nothing to change"),
], ids=["negative speed", "text timeout", "fractional max", "min above max", "negative node max",
        "unknown node type", "global min", "nothing"])
def test_bad_values_are_refused_and_nothing_is_written(template: Path, kwargs: dict, message: str) -> None:
    before = template.read_bytes()
    with pytest.raises(RaylabError) as e:
        set_scaling(template, **kwargs)
    assert message in e.value.one_line()
    assert template.read_bytes() == before
    assert sorted(p.name for p in template.parent.iterdir()) == ["ray-cluster.yaml"]


def test_unknown_node_type_suggests_the_closest(template: Path) -> None:
    with pytest.raises(RaylabError) as e:
        set_scaling(template, node_type="ray.worker.spt", max_workers=3)
    assert e.value.hint == "did you mean 'ray.worker.spot'?"


def test_edit_a_rendered_config_keeps_it_valid_and_mode(tmp_path: Path) -> None:
    from raylab.cluster.validate import check_file

    cfg = render(target="aws", scenario="mixed", lab="kim", outputs=OUTPUTS)
    p = write_rendered(cfg, tmp_path / "c.yaml")
    p.chmod(0o600)
    before = p.read_text()
    set_scaling(p, upscaling_speed=2.5, node_type="ray.worker.spot", max_workers=20)
    assert len(changed_lines(before, p.read_text())) == 4
    assert check_file(p) == []
    assert p.stat().st_mode & 0o777 == 0o600


def test_missing_file_is_a_raylab_error(tmp_path: Path) -> None:
    with pytest.raises(RaylabError, match="no such file"):
        set_scaling(tmp_path / "nope.yaml", upscaling_speed=1)
