"""The Ultralytics side of the benches that set this toolkit beside YOLOv8n (bench_vs_ultralytics, bench_deploy).

    python -m bench.ultralytics_side '<json spec>'    # train, validate, predict; prints "RESULT {...}"

Run as a child process, so that its thread count is its own, or imported by a bench where the ``ultralytics``
package is installed. It is not a dependency of the project and nothing outside bench/ imports it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def coco_detections(model, images: list[str], size: int, device: str) -> list[dict]:
    """``model``'s detections on ``images`` at its validation settings (conf 0.001, NMS IoU 0.7, 300 per image),
    as COCO results with the image's stem as id and class ids from 1, as eval.py --detections reads them."""
    rows = []
    for r in model.predict(source=images, imgsz=size, conf=0.001, iou=0.7, max_det=300, device=device, stream=True,
                           verbose=False):
        for (x1, y1, x2, y2), s, c in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist(), strict=True):
            rows.append({"image_id": Path(r.path).stem, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "score": s})
    return rows


def train_and_validate(a: dict) -> dict:
    """YOLOv8n from scratch on ``a["data"]`` for ``a["minutes"]``, then its best.pt validated by Ultralytics and
    its detections on ``a["val_images"]`` written to ``a["detections"]``."""
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = a["threads"]  # select_device() sets torch's threads from it
    torch.set_num_threads(a["threads"])
    t0 = time.time()
    YOLO("yolov8n.yaml").train(data=a["data"], imgsz=a["size"], batch=16, time=a["minutes"] / 60, device=a["device"],
                               pretrained=False, amp=a["amp"], plots=False, seed=0, project=a["project"],
                               name=a["name"], exist_ok=True, verbose=False)
    train_s = time.time() - t0
    run = Path(a["project"]) / a["name"]
    best = YOLO(str(run / "weights" / "best.pt"))
    own = best.val(data=a["data"], imgsz=a["size"], batch=16, device=a["device"], plots=False, verbose=False)
    rows = coco_detections(best, a["val_images"], a["size"], a["device"])
    Path(a["detections"]).write_text(json.dumps(rows))
    return {"train_seconds": train_s, "own_map50": float(own.box.map50), "own_map50_95": float(own.box.map),
            "run_dir": str(run)}


if __name__ == "__main__":
    print("RESULT " + json.dumps(train_and_validate(json.loads(sys.argv[1]))))
