"""nets/loss.py's objectness forms, chosen once from the loss keys, and the keys each form leaves idle (the run's
warning, utils/train/report.py)."""

from __future__ import annotations

import dataclasses

import pytest

from nets.loss import BCE, Focal, QualityFocal, Varifocal, objectness_form, unused_loss_keys
from utils.config.schema import LossConfig
from utils.train.report import idle_loss_keys


def loss_keys(**kw) -> dict:
    return dataclasses.asdict(dataclasses.replace(LossConfig(), **kw))


@pytest.mark.parametrize(("kw", "form"), [
    ({}, BCE(0.0)),
    ({"obj_iou_target": 0.5, "focal_form": "varifocal"}, BCE(0.5)),  # the form counts only with focal_loss on
    ({"focal_loss": True, "focal_gamma": 1.5, "focal_normalize": "num_pos"}, Focal(0.0, 0.25, 1.5, 10.0, "num_pos")),
    ({"focal_loss": True, "focal_form": "varifocal", "focal_alpha": 0.75, "focal_gamma": 1.5}, Varifocal(0.75, 1.5)),
    ({"focal_loss": True, "focal_form": "quality", "focal_gamma": 1.0}, QualityFocal(1.0)),
])
def test_the_keys_choose_one_form(kw: dict, form) -> None:
    keys = loss_keys(**kw)
    got = objectness_form(**{k: keys[k] for k in ("focal_loss", "focal_form", "focal_alpha", "focal_gamma",
                                                   "focal_loss_ratio", "focal_normalize", "obj_iou_target")})
    assert got == form and type(got) is type(form)


@pytest.mark.parametrize(("kw", "form", "unused"), [
    ({}, "BCE", ["focal_form", "focal_alpha", "focal_gamma", "focal_loss_ratio", "focal_normalize"]),
    ({"focal_cls": True}, "BCE", ["focal_form", "focal_loss_ratio", "focal_normalize"]),  # the class term reads them
    ({"focal_loss": True}, "classic", []),
    ({"focal_loss": True, "focal_form": "varifocal"}, "varifocal",
     ["focal_loss_ratio", "focal_normalize", "obj_iou_target"]),
    ({"focal_loss": True, "focal_form": "quality"}, "quality",
     ["focal_alpha", "focal_loss_ratio", "focal_normalize", "obj_iou_target"]),
    ({"focal_loss": True, "focal_form": "quality", "focal_cls": True}, "quality",
     ["focal_loss_ratio", "focal_normalize", "obj_iou_target"]),
])
def test_each_form_names_the_keys_it_does_not_read(kw: dict, form: str, unused: list[str]) -> None:
    assert unused_loss_keys(loss_keys(**kw)) == (form, unused)


def test_a_key_set_for_nothing_is_one_warning_line() -> None:
    # only keys moved from their default are named: shapes.yaml writes focal_alpha 0.25 with focal_loss off
    assert idle_loss_keys(LossConfig()) == []
    assert idle_loss_keys(LossConfig(focal_alpha=0.25, focal_gamma=2.0)) == []
    assert idle_loss_keys(LossConfig(focal_loss_ratio=3.0, focal_gamma=1.0)) == [
        "loss.focal_gamma = 1.0 does nothing here: the objectness form is BCE (loss.focal_loss is off)",
        "loss.focal_loss_ratio = 3.0 does nothing here: the objectness form is BCE (loss.focal_loss is off)"]
    assert idle_loss_keys(LossConfig(focal_loss=True, focal_form="varifocal", focal_normalize="num_pos")) == [
        "loss.focal_normalize = num_pos does nothing here: the objectness form is varifocal"]


def test_the_form_reads_as_its_settings() -> None:
    assert str(Focal(0.0, 0.25, 2.0, 10.0, "mean")) == \
        "classic (iou_target 0.0, alpha 0.25, gamma 2.0, ratio 10.0, normalize mean)"
    assert str(BCE(0.0)) == "BCE (iou_target 0.0)"
