"""utils/config/: the schema, loading: loading, overrides, validation messages, round trip, safety."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from utils.config.files import REPO_ROOT, find_config, read_anchors, read_classes
from utils.config.load import config_from_dict, dump_config, load_config, save_config
from utils.config.schema import Config, ConfigError, all_keys

SHIPPED = ["voc.yaml", "coco.yaml", "shapes.yaml"]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_round_trip(name: str, tmp_path: Path) -> None:
    cfg = load_config(name)
    saved = save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(saved)
    assert again == cfg
    assert dump_config(again) == dump_config(cfg)


def test_round_trip_of_non_default_values(tmp_path: Path) -> None:
    cfg = load_config("voc.yaml", ["model.cls_prior=0.05", "train.lr=2.5e-3", "data.hsv=[0, 0.5, 0.25]",
                                   "loss.multi_anchor_iou=0.213", "train.device=cuda:1"])
    again = load_config(save_config(cfg, tmp_path / "r.yaml"))
    assert again == cfg
    assert again.model.cls_prior == 0.05 and again.loss.multi_anchor_iou == 0.213


def test_voc_yaml_has_the_documented_settings() -> None:
    cfg = load_config("voc.yaml")
    assert (cfg.model.name, cfg.model.input_size) == ("yolov4", 416)
    assert cfg.data.train_splits == ["VOC2007/trainval", "VOC2012/trainval"]
    assert cfg.data.val_splits == ["VOC2007/test"]
    assert (cfg.loss.focal_loss, cfg.loss.focal_alpha, cfg.loss.focal_gamma) == (True, 0.25, 2.0)


def test_find_config_looks_in_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # voc.yaml does not exist here
    assert find_config("voc.yaml") == REPO_ROOT / "configs" / "voc.yaml"
    assert find_config("voc") == REPO_ROOT / "configs" / "voc.yaml"
    local = write(tmp_path, "model: {input_size: 320}\n", "voc.yaml")
    assert find_config("voc.yaml") == Path("voc.yaml")  # as given wins
    assert load_config(local).model.input_size == 320
    with pytest.raises(ConfigError, match="config file not found: 'nope.yaml'"):
        find_config("nope.yaml")


@pytest.mark.parametrize(
    ("override", "section", "key", "expected"),
    [
        ("model.input_size=608", "model", "input_size", 608),  # int
        ("train.lr=0.002", "train", "lr", 0.002),  # float
        ("train.lr=1e-4", "train", "lr", 1e-4),  # YAML 1.1 reads 1e-4 as a string; still a float here
        ("train.epochs=60", "train", "epochs", 60),
        ("loss.focal_gamma=1", "loss", "focal_gamma", 1.0),  # int accepted for a float field
        ("loss.focal_loss=false", "loss", "focal_loss", False),  # bool
        ("loss.focal_loss=true", "loss", "focal_loss", True),
        ("loss.iou_type=giou", "loss", "iou_type", "giou"),  # str
        ("data.train_splits=[VOC2007/trainval]", "data", "train_splits", ["VOC2007/trainval"]),  # list of str
        ("loss.balance=[1, 1, 1]", "loss", "balance", [1.0, 1.0, 1.0]),  # list of float
        ("model.cls_prior=null", "model", "cls_prior", None),  # optional
        ("model.cls_prior=0.1", "model", "cls_prior", 0.1),
        ("train.save_dir=runs/x y", "train", "save_dir", "runs/x y"),
        ("train.amp=off", "train", "amp", "off"),  # YAML 1.1 reads a bare off as false; the choice is the word
        ("train.channels_last=true", "train", "channels_last", "on"),  # the boolean of earlier configs still works
        ("train.channels_last=false", "train", "channels_last", "off"),
    ],
)
def test_override_of_each_type(override: str, section: str, key: str, expected: object) -> None:
    value = getattr(getattr(load_config("voc.yaml", [override]), section), key)
    assert value == expected
    assert type(value) is type(expected)


def test_override_beats_file_and_last_override_wins() -> None:
    cfg = load_config("voc.yaml", ["loss.focal_gamma=0.5", "loss.focal_gamma=1.5"])
    assert cfg.loss.focal_gamma == 1.5
    assert load_config("voc.yaml").loss.focal_gamma == 2.0


def test_keys_left_out_keep_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "loss:\n  focal_loss: true\n"))
    expected = Config()
    expected.loss.focal_loss = True
    assert cfg == expected
    assert load_config(write(tmp_path, "", "empty.yaml")) == Config()


# ---------------------------------------------------------------- validation errors name the key


def error_of(path: str | Path | None, overrides: list[str] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_unknown_key_in_override_suggests_closest() -> None:
    msg = error_of("voc.yaml", ["loss.focl_loss=false"])
    assert "loss.focl_loss" in msg and "Did you mean 'loss.focal_loss'?" in msg


def test_unknown_key_in_file_names_file_and_suggests(tmp_path: Path) -> None:
    p = write(tmp_path, "train:\n  epoch: 10\n")
    msg = error_of(p)
    assert str(p) in msg and "train.epoch" in msg and "'train.epochs'" in msg


def test_key_in_wrong_section_suggests_right_section() -> None:
    msg = error_of("voc.yaml", ["train.focal_gamma=1"])
    assert "train.focal_gamma" in msg and "'loss.focal_gamma'" in msg


def test_unknown_section(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "modle:\n  name: yolov4\n"))
    assert "unknown section 'modle'" in msg and "'model'" in msg


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ("loss.focal_loss=maybe", "loss.focal_loss", "must be bool"),
        ("loss.focal_loss=1", "loss.focal_loss", "must be bool"),  # 1 is not a bool
        ("model.input_size=416.0", "model.input_size", "must be int"),
        ("train.epochs=true", "train.epochs", "must be int"),  # a bool is not an int
        ("train.lr=fast", "train.lr", "must be float"),
        ("model.name=7", "model.name", "must be str"),
        ("data.train_splits=VOC2007/trainval", "data.train_splits", "must be a list of str"),
        ("loss.balance=[1, x, 1]", "loss.balance[1]", "must be float"),
        ("model.cls_prior=abc", "model.cls_prior", "must be float or null"),
    ],
)
def test_wrong_type_names_key(override: str, key: str, fragment: str) -> None:
    msg = error_of("voc.yaml", [override])
    assert key in msg and fragment in msg and override in msg


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ("loss.focal_alpha=1.5", "loss.focal_alpha", "valid range [0, 1]"),
        ("loss.focal_alpha=-0.1", "loss.focal_alpha", "must be >= 0"),
        ("data.mosaic=2", "data.mosaic", "valid range [0, 1]"),
        ("data.hsv=[0.1, 1.7, 0.4]", "data.hsv[1]", "valid range [0, 1]"),
        ("loss.label_smoothing=1", "loss.label_smoothing", "valid range [0, 1)"),
        ("train.batch_size=0", "train.batch_size", "must be > 0"),
        ("model.input_size=-32", "model.input_size", "must be > 0"),
        ("model.input_size=400", "model.input_size", "multiple of 32"),
        ("loss.iou_type=eiou", "loss.iou_type", "is not one of"),
        ("model.name=yolov5", "model.name", "is not one of"),
        ("loss.balance=[4, 1]", "loss.balance", "must have 3 entries"),
        ("data.train_splits=[]", "data.train_splits", "must not be empty"),
        ("train.device=gpu", "train.device", "auto, cpu, cuda, cuda:N"),
        ("train.freeze_epochs=500", "train.freeze_epochs", "exceeds train.epochs"),
        ("train.min_lr=0.5", "train.min_lr", "exceeds train.lr"),
        ("data.scale=[2.0, 0.5]", "data.scale", "min must not exceed max"),
    ],
)
def test_out_of_range_names_key(override: str, key: str, fragment: str) -> None:
    msg = error_of("voc.yaml", [override])
    assert key in msg and fragment in msg


def test_range_error_from_file_names_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "loss:\n  focal_gamma: -1\n")
    msg = error_of(p)
    assert str(p) in msg and "loss.focal_gamma" in msg and ">= 0" in msg


@pytest.mark.parametrize("key", ["model.anchors_path", "data.classes_path"])  # model.weights: at training's start
def test_missing_file_names_key(key: str) -> None:
    msg = error_of("voc.yaml", [f"{key}=no/such/file.txt"])
    assert key in msg and "file not found: 'no/such/file.txt'" in msg


def test_weights_file_that_exists_is_accepted(tmp_path: Path) -> None:
    w = tmp_path / "yolov4.conv.137"
    w.write_bytes(b"\0" * 20)
    assert load_config("voc.yaml", [f"model.weights={w}"]).model.weights == str(w)


def test_anchor_count_must_fit_the_model() -> None:
    msg = error_of("voc.yaml", ["model.name=yolov4-tiny"])
    assert "model.anchors_path" in msg and "needs 6 anchors" in msg and "has 9" in msg
    ok = load_config("voc.yaml", ["model.name=yolov4-tiny", "model.anchors_path=model_data/yolo_tiny_anchors.txt"])
    assert ok.model.name == "yolov4-tiny"


@pytest.mark.parametrize("bad", ["loss.focal_loss", "lossfocal_loss=1", "a.b.c=1", "loss.focal_alpha=[0.2"])
def test_malformed_override(bad: str) -> None:
    msg = error_of("voc.yaml", [bad])
    assert bad in msg


def test_non_mapping_yaml(tmp_path: Path) -> None:
    assert "top level must be a mapping" in error_of(write(tmp_path, "- 1\n- 2\n"))
    assert "section 'loss' must be a mapping" in error_of(write(tmp_path, "loss: 3\n"))
    assert "not a valid YAML" in error_of(write(tmp_path, "loss: [1,\n"))


def test_python_object_tag_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "model: !!python/object/apply:os.system ['echo pwned']\n")
    msg = error_of(p)
    assert "not a valid YAML" in msg and "python/object" in msg
    p = write(tmp_path, "train: !!python/object:utils.config.schema.TrainConfig {epochs: 1}\n")
    assert "python/object" in error_of(p)


def test_every_field_has_a_comment() -> None:
    # The source line of every field carries a '# meaning, unit' comment.
    text = (REPO_ROOT / "utils" / "config" / "schema.py").read_text().splitlines()
    for dotted in all_keys():
        key = dotted.split(".")[1]
        lines = [ln for ln in text if ln.lstrip().startswith(f"{key}:") and "_f(" in ln]
        assert lines, dotted
        assert all("  # " in ln and len(ln.split("  # ", 1)[1]) > 10 for ln in lines), dotted


def test_config_from_dict_of_a_checkpoint() -> None:
    cfg = load_config("shapes.yaml")
    assert config_from_dict(cfg.to_dict(), "checkpoint") == cfg
    assert dataclasses.asdict(cfg) == yaml.safe_load(dump_config(cfg))


def test_read_model_data() -> None:
    assert len(read_classes("model_data/voc_classes.txt")) == 20
    assert len(read_classes("model_data/coco_classes.txt")) == 80
    assert read_anchors("model_data/yolo_anchors.txt") == [
        (12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146), (142, 110), (192, 243), (459, 401)]
    assert read_anchors("model_data/yolo_tiny_anchors.txt") == [
        (10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)]


def test_bad_model_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="even count"):
        read_anchors(write(tmp_path, "10, 14, 23", "a.txt"))
    with pytest.raises(ConfigError, match="must be numbers"):
        read_anchors(write(tmp_path, "10, x", "a.txt"))
    with pytest.raises(ConfigError, match="appear twice"):
        read_classes(write(tmp_path, "cat\ndog\ncat\n", "c.txt"))
    with pytest.raises(ConfigError, match="no class names"):
        read_classes(write(tmp_path, "\n\n", "c.txt"))


def test_train_cli_stops_at_once_on_a_typo() -> None:
    # The acceptance check of the config: a typo ends the run before anything else happens.
    proc = subprocess.run([sys.executable, "train.py", "--config", "voc.yaml", "loss.focl_loss=false"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "loss.focal_loss" in proc.stderr


def test_synthetic_splits_must_be_in_the_named_set() -> None:
    with pytest.raises(ConfigError, match=r"not in the synthetic set shapes.name = 'MILD'; set data.train_splits=\[MILD/train\]"):
        load_config("shapes.yaml", ["shapes.name=MILD"])
    cfg = load_config("shapes.yaml", ["shapes.name=MILD", "data.train_splits=[MILD/train]", "data.val_splits=[MILD/val]"])
    assert cfg.data.val_splits == ["MILD/val"]
