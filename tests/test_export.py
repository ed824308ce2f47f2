"""export.py's formats against PyTorch on a trained model (tests/trained.py): ONNX (raw maps, simplified, with
the NMS inside), OpenVINO IR (float32 and float16 weights) and TorchScript. Each exported file is evaluated by
eval.py on the model's val split and must give PyTorch's mAP50 and mAP50-95 within 0.002, and its detections
one to one; an --nms graph must also give predict.py's boxes through onnxruntime alone (the README's script)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import eval as eval_cli
import export as export_cli
import predict as predict_cli
from tests.planted import read_txt
from tests.trained import unmatched
from utils.config.files import REPO_ROOT
from utils.infer.backend import BackendError, load_backend
from utils.infer.export import NMSSettings, export_model

pytestmark = pytest.mark.slow

EVAL_NMS = NMSSettings(conf=0.001, iou=0.5, max_det=300)  # eval's defaults (utils/config/schema.py, EvalConfig)
# name: (export_model's arguments, score tolerance, box tolerance in px)
FORMATS = {
    "onnx": ({"fmt": "onnx"}, 2e-4, 0.15),
    "onnx_simplified": ({"fmt": "onnx", "simplify": True}, 2e-4, 0.15),
    "onnx_nms": ({"fmt": "onnx", "nms": EVAL_NMS}, 2e-4, 0.15),
    "openvino": ({"fmt": "openvino"}, 2e-4, 0.15),
    "openvino_fp16": ({"fmt": "openvino", "half": True}, 3e-3, 0.5),  # float16 weights, float32 arithmetic
    "torchscript": ({"fmt": "torchscript"}, 2e-4, 0.15),
}


def evaluate(weights: Path, out: Path) -> tuple[dict, list[dict]]:
    """eval.py's metrics and detections for ``weights`` (PyTorch in float32, as the graphs are)."""
    assert eval_cli.main(["--weights", str(weights), "--precision", "fp32", "--json", str(out / "m.json"),
                          "--save-dir", str(out)]) == 0
    return json.loads((out / "m.json").read_text()), json.loads((out / "exp" / "detections.json").read_text())


@pytest.fixture(scope="module")
def reference(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    metrics, dets = evaluate(trained_model, tmp_path_factory.mktemp("pt"))
    assert metrics["images"] == 16 and metrics["map50"] > 0.4 and metrics["map50_95"] > 0.25  # trained: it means something
    return metrics, dets


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_gives_pytorchs_map_and_detections(name: str, trained_model: Path, reference, tmp_path: Path) -> None:
    kwargs, score_tol, box_tol = FORMATS[name]
    path, facts = export_model(trained_model, **kwargs, output=_output(tmp_path, kwargs["fmt"]))
    assert load_backend(path).kind == {"onnx": "onnxruntime"}.get(kwargs["fmt"], kwargs["fmt"])
    if kwargs.get("simplify"):
        assert facts["nodes_simplified"] < facts["nodes"]
    metrics, dets = evaluate(path, tmp_path / "eval")
    ref_metrics, ref_dets = reference
    for key in ("map50", "map50_95"):
        assert metrics[key] == pytest.approx(ref_metrics[key], abs=0.002), key
    if kwargs.get("half"):  # float16 weights move scores by ~1e-3, enough to flip NMS between near-equal low boxes:
        confident = [d for d in ref_dets if d["score"] > 0.1]  # the detections a user would act on, one to one
        assert len(confident) >= 10 and not unmatched(confident, [d for d in dets if d["score"] > 0.09], score_tol, box_tol)
    else:
        assert len(dets) == len(ref_dets) > 16
        assert not unmatched(ref_dets, dets, score_tol, box_tol)
        assert not unmatched(dets, ref_dets, score_tol, box_tol)


def _output(tmp_path: Path, fmt: str) -> Path:
    return {"onnx": tmp_path / "m.onnx", "torchscript": tmp_path / "m.torchscript",
            "openvino": tmp_path / "m_openvino" / "m.xml"}[fmt]


def test_the_nms_graphs_outputs_are_batch_first_and_padded(trained_model: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from tests.trained import val_images

    path, _ = export_model(trained_model, output=tmp_path / "m.onnx", nms=NMSSettings(0.3, 0.45, 5), dynamic=True)
    session = ort.InferenceSession(str(path))
    assert [o.name for o in session.get_outputs()] == ["num_dets", "boxes", "scores", "classes"]
    backend = load_backend(trained_model, precision="fp32")
    images = val_images(trained_model, 3)
    batch = np.stack([cv2.resize(i, (96, 96))[:, :, ::-1].transpose(2, 0, 1) for i in images]).astype(np.float32) / 255
    num, boxes, scores, classes = session.run(None, {"images": batch})
    assert (num.shape, boxes.shape, scores.shape, classes.shape) == ((3, 1), (3, 5, 4), (3, 5), (3, 5))
    assert num.dtype == classes.dtype == np.int64 and boxes.dtype == scores.dtype == np.float32
    import torch

    eval_cfg = backend.cfg.eval
    eval_cfg.conf_thres, eval_cfg.nms_iou, eval_cfg.max_det = 0.3, 0.45, 5
    want = backend.detect(torch.from_numpy(batch), eval_cfg)  # decoding and NMS in Python, as predict.py does
    for i, w in enumerate(want):
        k = int(num[i, 0])
        assert k == len(w) and k <= 5
        np.testing.assert_allclose(scores[i, :k], w[:, 4].numpy(), atol=2e-4)  # best first, as NMS returns them
        np.testing.assert_allclose(boxes[i, :k], w[:, :4].numpy(), atol=0.05)
        np.testing.assert_array_equal(classes[i, :k], w[:, 5].numpy().astype(np.int64))
        assert (scores[i, k:] == 0).all() and (boxes[i, k:] == 0).all() and (classes[i, k:] == -1).all()
    assert sum(len(w) for w in want) > 0


def readme_script() -> str:
    """The onnxruntime-only script of the README (the fenced block after its marker line)."""
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- onnxruntime-only -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no onnxruntime-only script"
    return match.group(1)


def test_the_readmes_onnxruntime_script_gives_predict_pys_boxes(trained_model: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    script = readme_script()
    assert "import" in script and not re.search(r"^\s*(from|import) (utils|nets|detector|predict)", script, re.M)
    assert len(script.strip().splitlines()) <= 12
    onnx_path = tmp_path / "best.onnx"
    assert export_cli.main(["--weights", str(trained_model), "--nms", "--output", str(onnx_path)]) == 0
    capsys.readouterr()
    (tmp_path / "detect.py").write_text(script)
    images = sorted((trained_model.parent / "data" / "SHAPES" / "JPEGImages").glob("*.jpg"))[:4]
    names = load_backend(trained_model).class_names
    found = 0
    for image in images:
        out = subprocess.run([sys.executable, str(tmp_path / "detect.py"), str(onnx_path), str(image)], cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout
        theirs = [(names[int(c)], float(s), [float(v) for v in box]) for c, s, *box in (ln.split() for ln in
                                                                                         out.splitlines())]
        assert predict_cli.main(["--weights", str(trained_model), "--precision", "fp32", "--source", str(image),
                                 "--save-txt-voc", "--no-save", "--save-dir", str(tmp_path / "p")]) == 0
        ours = read_txt(sorted((tmp_path / "p").iterdir())[-1] / "labels_voc" / f"{image.stem}.txt")
        assert len(theirs) == len(ours)
        for (n1, s1, b1), (n2, s2, b2) in zip(sorted(theirs), sorted(ours), strict=True):
            assert n1 == n2 and abs(s1 - s2) <= 2e-4 and np.allclose(b1, b2, atol=0.15)
        found += len(ours)
    assert found > 0


def test_export_cli_facts_and_errors(trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "facts.json"
    assert export_cli.main(["--weights", str(trained_model), "--simplify", "--output", str(tmp_path / "s.onnx"),
                            "--json", str(out)]) == 0
    facts = json.loads(out.read_text())
    assert facts["nodes_simplified"] < facts["nodes"] and facts["max_abs_diff"] < 1e-3
    assert "simplified" in capsys.readouterr().out
    for extra, message in ((["--format", "openvino", "--nms"], "--nms is for ONNX graphs"),
                           (["--nms", "--half"], "--half and --nms")):
        assert export_cli.main(["--weights", str(trained_model), "--output", str(tmp_path / "x"), *extra]) == 1
        assert message in capsys.readouterr().err
    with pytest.raises(BackendError, match="format must be one of"):
        export_model(trained_model, "tflite")
    # OpenVINO's conversion goes through an ONNX graph of its own: a user's file of that name beside it stays
    (tmp_path / "ov").mkdir()
    (tmp_path / "ov" / "m.onnx").write_text("mine")
    export_model(trained_model, "openvino", tmp_path / "ov" / "m.xml")
    assert (tmp_path / "ov" / "m.onnx").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == ["m.bin", "m.onnx", "m.xml"]
