"""predict.py on each source kind, its txt / json formats in original pixels, drawing, and export.py's
ONNX graph against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import export as export_cli
import predict as predict_cli
from nets.darknet import save_darknet
from nets.weights import WeightsError
from nets.yolo import build_model
from tests.planted import BOX, CLASSES, SIZE, H, W, image, read_txt
from utils import runtime
from utils.checkpoint import ModelCard, save_model
from utils.config.files import read_anchors
from utils.config.load import load_config
from utils.data.augment import letterbox
from utils.data.dataset import to_chw_rgb
from utils.infer.backend import BackendError, load_backend
from utils.infer.draw import class_colour, draw_detections
from utils.infer.export import export_model
from utils.infer.postprocess import detect
from utils.infer.sources import SourceError, resolve_source


def run(tmp_path: Path, source: Path | str, *extra: str, weights: Path | str = "planted.pt") -> Path:
    assert predict_cli.main(["--weights", str(weights), "--source", str(source), "--save-dir", str(tmp_path / "runs"),
                             *extra]) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    return runs[-1]


def test_image_source_writes_drawn_image_txt_and_json_in_original_pixels(tmp_path: Path, planted) -> None:
    src = tmp_path / "one.jpg"
    cv2.imwrite(str(src), image())
    out = run(tmp_path, src, "--save-txt-voc", "--save-json")
    drawn = cv2.imread(str(out / "one.jpg"))
    assert drawn.shape == (H, W, 3)  # the original size, not the network's
    ((name, score, box),) = read_txt(out / "labels_voc" / "one.txt")
    assert name == "triangle" and score > 0.99
    np.testing.assert_allclose(box, BOX, atol=0.15)  # txt keeps one decimal
    (row,) = json.loads((out / "predictions.json").read_text())
    assert row["category_id"] == 3 and row["category"] == "triangle" and row["file_name"] == "one"
    x, y, w, h = row["bbox"]  # COCO results: [x, y, width, height]
    np.testing.assert_allclose([x, y, x + w, y + h], BOX, atol=0.02)


def test_folder_skips_a_corrupt_file_and_goes_on(tmp_path: Path, planted, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), image(i))
    cv2.imwrite(str(folder / "sub" / "3.jpg"), image(3))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    out = run(tmp_path, folder, "--save-txt-voc", "--batch", "2", "--json")
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 4 and summary["detections"] == 4
    assert summary["skipped"] == [str(folder / "broken.jpg")]
    assert summary["per_class"] == {"triangle": 4}
    assert {p.name for p in out.iterdir()} >= {"0.png", "1.png", "2.png", "sub__3.jpg", "labels_voc"}
    assert len(list((out / "labels_voc").iterdir())) == 4


def test_video_source_writes_an_mp4_with_the_input_size_and_fps(tmp_path: Path, planted) -> None:
    src = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (W, H))
    for i in range(10):
        writer.write(image(i))
    writer.release()
    out = run(tmp_path, src, "--save-txt-voc", "--batch", "4")
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 10
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (W, H)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert sorted(p.name for p in (out / "labels_voc").iterdir()) == sorted(f"clip_{i}.txt" for i in range(1, 11))
    ((_, _, box),) = read_txt(out / "labels_voc" / "clip_7.txt")
    np.testing.assert_allclose(box, BOX, atol=0.15)


def test_class_filter_and_no_save(tmp_path: Path, planted, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "one.png"
    cv2.imwrite(str(src), image())
    out = run(tmp_path, src, "--classes", "circle", "1", "--save-txt-voc", "--no-save")
    assert (out / "labels_voc" / "one.txt").read_text() == ""  # triangle filtered out
    assert not (out / "one.png").exists()
    out = run(tmp_path, src, "--classes", "triangle", "--save-txt-voc", "--no-save")
    assert len(read_txt(out / "labels_voc" / "one.txt")) == 1
    capsys.readouterr()
    assert predict_cli.main(["--weights", "planted.pt", "--source", str(src), "--classes", "hexagon", "2"]) == 1
    assert capsys.readouterr().err == ("error: classes hexagon: not among the model's classes "
                                       "(circle, square, triangle, diamond, cross, ring)\n")


def test_missing_source_and_bad_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="source not found"):
        resolve_source(str(tmp_path / "nope.jpg"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        resolve_source(str(tmp_path / "empty"))
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(SourceError, match="neither an image"):
        resolve_source(str(tmp_path / "a.csv"))
    assert resolve_source("0").kind == "webcam"
    with pytest.raises(WeightsError, match="weights file not found"):
        load_backend(tmp_path / "x.pt")
    with pytest.raises(WeightsError, match="weights file not found"):
        load_backend(tmp_path / "x.onnx")


def test_drawing_keeps_labels_inside_the_image_and_colours_stable() -> None:
    img = np.zeros((120, 200, 3), np.uint8)
    dets = np.array([[0, 0, 60, 40, 0.87, 1], [175, 80, 200, 120, 0.5, 4]], np.float32)  # top-left and bottom-right corners
    out = draw_detections(img, dets, CLASSES)
    assert out.shape == img.shape and not img.any()  # drawn on a copy
    # the first label has no room above its box, so it sits inside it, at the top: pixels of its colour there
    assert (out[1:12, 2:40] == class_colour(1)).all(-1).any()
    # the second label ("cross 0.50", about 43 px wide) is shifted left to stay whole: its background starts before x = 175
    assert (out[60:80, 150:175] == class_colour(4)).all(-1).any()
    # stable across runs and machines: class 3's hue is 3 * 0.618034 mod 1 = 0.854102; HSV (0.854102, 0.85, 0.95)
    # is RGB (0.95, 0.1425, 0.84938), times 255 and truncated: B 216, G 36, R 242
    assert class_colour(3) == (216, 36, 242)
    assert len({class_colour(c) for c in range(20)}) == 20


# --------------------------------------------------------------------------- real models and ONNX


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = load_config("shapes.yaml", ["model.name=yolov4-tiny", "model.anchors_path=model_data/shapes_anchors.txt",
                                      f"model.input_size={SIZE}", f"data.root={tmp / 'data'}", "shapes.num_train=2",
                                      "shapes.num_val=4", "shapes.num_test=0", f"shapes.width={SIZE}",
                                      f"shapes.height={SIZE}"])
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", 6)
    with torch.no_grad():  # random heads and BN statistics, so that boxes and scores vary and fusing matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        for conv in model.head.modules():
            if isinstance(conv, torch.nn.Conv2d) and conv.bias is not None:
                conv.bias.normal_(0, 1.0)
    path = tmp / "best.pt"
    save_model(path, ModelCard("yolov4-tiny", CLASSES, read_anchors(cfg.model.anchors_path), SIZE, cfg.to_dict()),
               model.state_dict())
    return path


def letterboxed(n: int) -> torch.Tensor:
    return torch.stack([to_chw_rgb(letterbox(image(i), SIZE)[0]) for i in range(n)]).float().div_(255)


@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_matches_pytorch_raw_outputs_and_boxes(tmp_path: Path, checkpoint: Path, dynamic: bool) -> None:
    onnx_path = tmp_path / "m.onnx"
    export_cli.main(["--weights", str(checkpoint), "--output", str(onnx_path), *(["--dynamic"] if dynamic else [])])
    ref = load_backend(checkpoint, fuse=False)  # the plain model, not the fused one the export starts from
    ort = load_backend(onnx_path)
    with pytest.raises(BackendError, match="exported in"):
        load_backend(onnx_path, precision="bf16")
    assert load_backend(onnx_path, precision="auto").precision == "fp32"  # a graph runs as it was exported
    assert ort.kind == "onnxruntime" and ort.class_names == CLASSES and ort.spec == ref.spec
    assert (ort.fixed_batch is None) == dynamic
    x = letterboxed(3)  # a fixed-batch graph is fed one image at a time
    a, b = ref(x), ort(x)
    for p, q in zip(a, b, strict=True):
        assert p.shape == q.shape
        assert float((p - q).abs().max()) < 1e-4
    ref.cfg.eval.conf_thres = 0.01
    boxes_a, boxes_b = detect(a, ref.spec, ref.cfg.eval), detect(b, ort.spec, ref.cfg.eval)
    assert sum(len(d) for d in boxes_a) > 10  # a real comparison, not of empty lists
    for da, db in zip(boxes_a, boxes_b, strict=True):  # the same boxes kept, compared in a score-free order
        assert len(da) == len(db)
        da, db = (d[np.lexsort((d[:, 1].numpy(), d[:, 0].numpy(), d[:, 5].numpy()))] for d in (da, db))
        torch.testing.assert_close(da[:, 5], db[:, 5])
        torch.testing.assert_close(da[:, :5], db[:, :5], atol=1e-3, rtol=0)
    if dynamic:  # another batch and size
        x = torch.rand(2, 3, 160, 96)
        for p, q in zip(ref(x), ort(x), strict=True):
            assert float((p - q).abs().max()) < 1e-4


def test_pytorch_backend_layout_and_precision(checkpoint: Path) -> None:
    x = letterboxed(2)
    ref = load_backend(checkpoint, fuse=False, channels_last=False)(x)
    fast = load_backend(checkpoint)  # the default: fused, channels_last, float32
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for p, q in zip(ref, fast(x), strict=True):
        assert float((p - q).abs().max()) < 1e-4
    bf16 = load_backend(checkpoint, precision="bf16")
    assert conv.weight.dtype == torch.float32 and next(bf16.model.parameters()).dtype == torch.bfloat16
    out = bf16(x)
    for p, q in zip(ref, out, strict=True):
        assert q.dtype == torch.float32
        # bfloat16 keeps 8 significant bits (relative step 2^-8 = 0.4%); through ~20 layers the
        # maps stay within a few percent of their range, and do differ from float32
        err = float((p - q).abs().max() / p.abs().max())
        assert 1e-4 < err < 0.05
    with pytest.raises(BackendError, match="CUDA"):
        load_backend(checkpoint, precision="fp16")
    # --precision auto (the CLIs' default): bf16 where the CPU has the instructions, else float32
    for native, dtype, name in ((True, torch.bfloat16, "bf16"), (False, torch.float32, "fp32")):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(runtime, "cpu_has_native_bf16", lambda native=native: native)
            auto = load_backend(checkpoint, precision="auto")
        assert next(auto.model.parameters()).dtype == dtype and auto.precision == name
    with pytest.raises(BackendError, match="precision must be"):
        load_backend(checkpoint, precision="int8")


def test_onnx_half_export_and_metadata(tmp_path: Path, checkpoint: Path) -> None:
    import onnx

    path = export_model(checkpoint, "onnx", tmp_path / "h.onnx", half=True)[0]
    graph = onnx.load(str(path))
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    meta = json.loads({p.key: p.value for p in graph.metadata_props}["yolov4"])
    assert meta["class_names"] == CLASSES and meta["model_name"] == "yolov4-tiny" and meta["input_size"] == SIZE
    assert path.stat().st_size < 0.6 * export_model(checkpoint, "onnx", tmp_path / "f.onnx")[0].stat().st_size


def test_darknet_weights_with_a_config(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    backend = load_backend(checkpoint, fuse=False)
    weights = save_darknet(backend.model, tmp_path / "tiny.weights")
    src = tmp_path / "one.jpg"
    cv2.imwrite(str(src), image())
    args = ["--weights", str(weights), "--source", str(src), "--save-dir", str(tmp_path / "r"), "--json",
            "--conf", "0.02"]
    assert predict_cli.main(args) == 1
    assert "give --config" in capsys.readouterr().err
    assert predict_cli.main([*args, "--config", "shapes.yaml", f"model.input_size={SIZE}"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 1 and summary["detections"] > 0


def test_heatmap_and_benchmark(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "one.jpg"
    cv2.imwrite(str(src), image())
    out = run(tmp_path, src, "--heatmap", weights=checkpoint)
    heat = cv2.imread(str(out / "one_heatmap.jpg"))
    assert heat.shape == (H, W, 3)
    capsys.readouterr()
    assert predict_cli.main(["--weights", str(checkpoint), "--source", str(src), "--benchmark", "--batch", "2"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["fps"] > 0 and set(bench["ms_per_batch"]) == {"pre", "model", "post", "total"}
