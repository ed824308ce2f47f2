"""utils/metrics/ (voc, coco): VOC AP against a plain devkit loop and hand values; fast COCO AP against pycocotools."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from utils.data.records import Record
from utils.metrics.coco import coco_evaluate, coco_evaluate_fast
from utils.metrics.voc import best_f1, confusion_matrix, voc_ap, voc_evaluate, voc_match


def scene(seed: int, n_img: int = 40, num_classes: int = 5, per_image: int = 20):
    """Random ground truth, and detections that are jittered copies of it plus false alarms, scores with ties."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for i in range(n_img):
        w, h = 400, 300
        g = int(rng.integers(0, 8))
        xy = rng.uniform(0, 1, (g, 2)) * [w, h]
        wh = np.exp(rng.uniform(np.log(4), np.log(200), (g, 2)))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
        labels = rng.integers(0, num_classes - 1, g)  # the last class has no ground truth
        gts.append(Record(str(i), f"{i}.jpg", w, h, boxes, labels, rng.random(g) < 0.1))
        k = 0 if i == 2 else int(rng.integers(0, per_image))  # image 2: no detections
        src = rng.integers(0, max(g, 1), k)
        true = rng.random(k) < 0.6 if g else np.zeros(k, bool)
        xy = rng.uniform(0, 1, (k, 2)) * [w, h]
        bx = np.concatenate([xy, xy + rng.uniform(5, 150, (k, 2))], 1)
        if g:
            bx[true] = boxes[src[true]] + rng.normal(0, 4, (int(true.sum()), 4))
        bx[:, 2:] = np.maximum(bx[:, 2:], bx[:, :2] + 1)
        lab = np.where(true, labels[src] if g else 0, rng.integers(0, num_classes, k))
        score = np.round(np.where(true, rng.uniform(0.3, 1.0, k), rng.uniform(0.0, 0.7, k)), 2)  # ties
        dets.append(np.concatenate([bx, score[:, None], lab[:, None]], 1).astype(np.float32))
    return dets, gts


# ---------------------------------------------------------------- VOC


def devkit_loop(dets, gts, cls: int, thr: float):
    """VOCevaldet.m written plainly: one detection at a time."""
    rows = sorted([(d[4], i, d) for i, ds in enumerate(dets) for d in ds if int(d[5]) == cls], key=lambda r: -r[0])
    taken = {i: np.zeros(len(g.labels), bool) for i, g in enumerate(gts)}
    npos = sum(int(((g.labels == cls) & ~g.difficult).sum()) for g in gts)
    tp, fp = [], []
    for _, i, d in rows:
        g = gts[i]
        best, jmax = -1.0, -1
        for j in range(len(g.labels)):
            if g.labels[j] != cls:
                continue
            b = g.boxes[j]
            iw = min(d[2], b[2]) - max(d[0], b[0])
            ih = min(d[3], b[3]) - max(d[1], b[1])
            if iw > 0 and ih > 0:
                inter = iw * ih
                ov = inter / ((d[2] - d[0]) * (d[3] - d[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
                if ov > best:
                    best, jmax = ov, j
        if best >= thr:
            if g.difficult[jmax]:
                continue  # neither
            if not taken[i][jmax]:
                taken[i][jmax] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return tp / max(npos, 1), tp / np.maximum(tp + fp, np.finfo(float).eps), npos


def devkit_ap(rec, prec, use_07: bool = False) -> float:
    """VOCap.m (all points, VOC2010 on) and VOCevaldet.m's 11-point loop (VOC2007), written plainly."""
    if use_07:
        ap = 0.0
        for t in np.arange(0, 1.1, 0.1):  # t = 0:0.1:1
            above = [p for r, p in zip(rec, prec, strict=True) if r >= t]
            ap += (max(above) if above else 0.0) / 11
        return ap
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):  # the precision envelope, from the right
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thr", [0.5, 0.7])
def test_voc_matches_the_devkit_loop(seed: int, thr: float) -> None:
    dets, gts = scene(seed)
    # stable order for equal scores: the loop above keeps the input order, so do we
    result = voc_evaluate(dets, gts, 5, iou_thr=thr)
    for c in range(5):
        rec, prec, npos = devkit_loop(dets, gts, c, thr)
        assert result["npos"][c] == npos
        if npos == 0:
            assert np.isnan(result["ap"][c])
            continue
        assert result["ap"][c] == pytest.approx(devkit_ap(rec, prec, False), abs=1e-9)
        assert result["ap07"][c] == pytest.approx(devkit_ap(rec, prec, True), abs=1e-9)
    assert result["map"] == pytest.approx(np.nanmean(result["ap"]))


def test_voc_ap_by_hand() -> None:
    # three ground truths; detections in score order: TP, FP, TP -> recall 1/3, 1/3, 2/3, precision 1, 1/2, 2/3.
    recall, precision = np.array([1 / 3, 1 / 3, 2 / 3]), np.array([1.0, 0.5, 2 / 3])
    # all-point: envelope 1 up to recall 1/3, 2/3 up to 2/3: 1/3 * 1 + 1/3 * 2/3 = 5/9
    assert voc_ap(recall, precision) == pytest.approx(5 / 9)
    # 11-point: t = 0, .1, .2, .3 -> 1 (4 points); .4, .5, .6 -> 2/3 (3 points); .7 .. 1 -> 0 (4 points)
    assert voc_ap(recall, precision, use_07=True) == pytest.approx((4 * 1 + 3 * 2 / 3) / 11)


def test_voc_ap_takes_the_precision_envelope() -> None:
    # TP, FP, TP, TP over three ground truths: recall 1/3, 1/3, 2/3, 1; precision 1, 1/2, 2/3, 3/4. Precision rises
    # after the FP, so the envelope (the best precision at this recall or beyond) differs from the curve at 2/3:
    # 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6 (the raw curve would give 1/3 + 2/9 + 1/4 = 29/36)
    recall, precision = np.array([1 / 3, 1 / 3, 2 / 3, 1.0]), np.array([1.0, 0.5, 2 / 3, 0.75])
    assert voc_ap(recall, precision) == pytest.approx(5 / 6) == devkit_ap(recall, precision)
    # 11-point: t = 0 .. .3 -> 1 (4 points); .4 .. 1 -> 3/4 (7 points)
    assert voc_ap(recall, precision, use_07=True) == pytest.approx((4 + 7 * 0.75) / 11)
    assert devkit_ap(recall, precision, use_07=True) == pytest.approx((4 + 7 * 0.75) / 11)


def test_voc_difficult_duplicates_and_thresholds() -> None:
    g = Record("0", "0.jpg", 100, 100, np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), np.array([0, 0]),
               np.array([False, True]))
    dets = [np.array([[0, 0, 10, 10, 0.9, 0],  # TP
                      [0, 0, 10, 10, 0.8, 0],  # duplicate -> FP
                      [50, 50, 60, 60, 0.7, 0],  # on the difficult one -> neither
                      [0, 0, 10, 5, 0.6, 0]], np.float32)]  # IoU 0.5 exactly with the taken one -> FP (>= 0.5)
    r = voc_evaluate(dets, [g], 1, iou_thr=0.5, score_thr=0.75)
    assert r["npos"][0] == 1
    # TP, FP, FP: recall 1 at precision 1 first -> AP 1
    assert r["ap"][0] == pytest.approx(1.0) and r["ap07"][0] == pytest.approx(1.0)
    # at score >= 0.75: 2 detections kept (0.9, 0.8), 1 TP -> precision 0.5, recall 1, F1 2/3
    assert (r["precision"][0], r["recall"][0], r["f1"][0]) == (0.5, 1.0, pytest.approx(2 / 3))


def test_voc_empty_inputs() -> None:
    g = Record("0", "0.jpg", 100, 100, np.zeros((0, 4), np.float32), np.zeros(0, int), np.zeros(0, bool))
    r = voc_evaluate([np.zeros((0, 6), np.float32)], [g], 2)
    assert np.isnan(r["map"]) and (r["npos"] == 0).all()


# ---------------------------------------------------------------- COCO


@pytest.mark.parametrize("seed", range(5))
def test_fast_coco_equals_pycocotools(seed: int) -> None:
    dets, gts = scene(seed, n_img=30 + 10 * seed)
    ref = coco_evaluate(dets, gts, [str(i) for i in range(5)])
    fast = coco_evaluate_fast(dets, gts, 5)
    assert ref["AP50"] > 0.1  # a meaningful PR curve, not a degenerate one
    for key, value in ref.items():
        assert fast[key] == pytest.approx(value, abs=1e-6), key
    assert np.nanmean(fast["per_class_AP50_95"]) == pytest.approx(ref["AP50_95"], abs=1e-6)
    assert np.isnan(fast["per_class_AP50_95"][4])  # the class without ground truth


def test_fast_coco_with_many_detections_per_class_and_max_det() -> None:
    dets, gts = scene(11, n_img=8, num_classes=2, per_image=150)  # > 100 per (image, class): the cut applies
    ref = coco_evaluate(dets, gts, ["a", "b"])
    fast = coco_evaluate_fast(dets, gts, 2)
    for key, value in ref.items():
        assert fast[key] == pytest.approx(value, abs=1e-6), key


def edge_scene():
    """A scene built for COCOeval's edge cases, each of which the random scenes seldom reach: (image, class)
    pairs holding 9, 17 and 20 ground truths (the bucket edges of the fast matching), ground truths and
    unmatched detections of area exactly 32**2 and 96**2 (the area ranges' edges, both inclusive), IoUs of
    exactly 0.5 and 0.75 (thresholds, inclusive), a detection that overlaps an ignored ground truth more than
    the ordinary one it must take, and a pair with 101 detections whose last one alone is true (maxDets 100)."""
    rng = np.random.default_rng(7)
    gts, dets = [], []

    def grid(n: int, size: float) -> np.ndarray:  # n boxes apart from each other on a 5-wide grid
        xy = np.array([[(i % 5) * 130.0 + 5, (i // 5) * 130.0 + 5] for i in range(n)])
        return np.concatenate([xy, xy + size], 1)

    for n, label in ((9, 0), (17, 0), (20, 1)):
        boxes = grid(n, 100.0)
        difficult = np.arange(n) % 7 == 3
        true = boxes + rng.normal(0, 6, boxes.shape)
        false = boxes[::3] + [40, 40, 40, 40]
        d = np.concatenate([true, false])
        scores = np.round(rng.uniform(0.1, 1.0, len(d)), 1)  # ties
        dets.append(np.column_stack([d, scores, np.full(len(d), label)]))
        gts.append(Record(str(len(gts)), f"{len(gts)}.jpg", 700, 700, boxes, np.full(n, label), difficult))
    # areas at the range edges: a 32x32 and a 96x96 ground truth, matched; unmatched detections of those areas
    boxes = np.array([[0, 0, 32, 32], [100, 100, 196, 196]], np.float64)
    d = np.array([[1, 0, 33, 32, 0.9, 0], [100, 101, 196, 197, 0.8, 0], [300, 300, 332, 332, 0.95, 0],
                  [400, 400, 496, 496, 0.7, 0]])
    dets.append(d)
    gts.append(Record("3", "3.jpg", 600, 600, boxes, np.zeros(2, int), np.zeros(2, bool)))
    # IoU exactly 0.5 and 0.75 (100x50 and 100x75 inside 100x100); and a detection whose IoU with the crowd
    # (difficult) ground truth, 0.95, beats that with the ordinary one, 0.6: COCOeval takes the ordinary one
    boxes = np.array([[0, 0, 100, 100], [200, 0, 300, 100], [400, 0, 500, 100], [400, 0, 500, 60]], np.float64)
    d = np.array([[0, 0, 100, 50, 0.9, 1], [200, 0, 300, 75, 0.8, 1], [400, 0, 500, 100, 0.7, 1]])
    dets.append(d)
    gts.append(Record("4", "4.jpg", 600, 600, boxes[[0, 1, 3, 2]], np.ones(4, int), np.array([0, 0, 0, 1], bool)))
    # 100 false alarms above one true detection in one (image, class) pair: the true one is cut
    alarms = np.column_stack([grid(25, 20.0).repeat(4, 0) + 300, np.full(100, 0.9), np.zeros(100)])
    d = np.concatenate([alarms, [[0, 0, 50, 50, 0.1, 0]]])
    dets.append(d)
    gts.append(Record("5", "5.jpg", 900, 900, np.array([[0, 0, 50, 50.0]]), np.zeros(1, int), np.zeros(1, bool)))
    return [x.astype(np.float32) for x in dets], gts


def test_fast_coco_equals_pycocotools_at_the_edges() -> None:
    dets, gts = edge_scene()
    ref = coco_evaluate(dets, gts, ["a", "b"])
    fast = coco_evaluate_fast(dets, gts, 2)
    assert ref["AP50"] > 0.5 and ref["APs"] > 0 and ref["APm"] > 0 and ref["APl"] > 0
    for key, value in ref.items():
        assert fast[key] == pytest.approx(value, abs=1e-6), key
    # the cut at 100 detections matters: without it the last image's true detection raises AP
    uncut = coco_evaluate_fast(dets, gts, 2, max_det=101)
    assert uncut["AP50"] > fast["AP50"] + 1e-3


def test_coco_files_as_written() -> None:
    from utils.metrics.coco import coco_ground_truth, coco_results

    boxes = np.array([[1, 2, 11, 22], [0, 0, 4, 4]], np.float32)
    records = [Record("a", "/d/a.jpg", 40, 30, boxes, np.array([1, 0]), np.array([False, True])),
               Record("b", "/d/b.png", 50, 60, boxes[:0], np.zeros(0, int), np.zeros(0, bool))]
    assert coco_ground_truth(records, ["cat", "dog"]) == {
        "images": [{"id": 1, "width": 40, "height": 30, "file_name": "/d/a.jpg"},
                   {"id": 2, "width": 50, "height": 60, "file_name": "/d/b.png"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 10.0, 20.0], "area": 200.0,
                         "iscrowd": 0},
                        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 4.0, 4.0], "area": 16.0,
                         "iscrowd": 1}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    dets = [np.array([[1, 2, 11, 22, 0.5, 1]], np.float32), np.zeros((0, 6), np.float32)]
    assert coco_results(dets) == [{"image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}]


def test_coco_results_read_back_and_refused() -> None:
    from utils.metrics.coco import ResultsFileError, coco_results, read_coco_results

    dets, gts = scene(3, n_img=4)
    back = read_coco_results(coco_results(dets), gts, 5, "d.json")
    assert all(b.dtype == np.float32 for b in back)
    for b, d in zip(back, dets, strict=True):
        np.testing.assert_allclose(b, d, atol=1e-4)
    by_name = read_coco_results([{"image_id": "2.jpg", "category_id": 1, "bbox": [0, 0, 2, 3], "score": 0.5},
                                 {"image_id": "3", "category_id": 5, "bbox": [1, 1, 2, 2], "score": 0.25}], gts, 5)
    np.testing.assert_array_equal(by_name[2], [[0, 0, 2, 3, 0.5, 0]])
    np.testing.assert_array_equal(by_name[3], [[1, 1, 3, 3, 0.25, 4]])
    entry = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
    for bad, message in (({**entry, "image_id": 5}, r"d.json: entry 0 names image 5, which is not in the split"),
                         ({**entry, "image_id": 0}, "names image 0"),
                         ({**entry, "image_id": "x.jpg"}, "names image 'x.jpg'"),
                         ({**entry, "category_id": 6}, r"entry 0 has category_id 6; the classes are 1..5"),
                         ({**entry, "category_id": 0}, "category_id 0"),
                         ({"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, "entry 0 is not a COCO result")):
        with pytest.raises(ResultsFileError, match=message):
            read_coco_results([bad], gts, 5, "d.json")
    with pytest.raises(ResultsFileError, match="d.json: not a COCO results list"):
        read_coco_results({"x": 1}, gts, 5, "d.json")


def test_coco_evaluate_prints_nothing(capsys: pytest.CaptureFixture) -> None:
    dets, gts = scene(1, n_img=4)
    coco_evaluate(dets, gts, [str(i) for i in range(5)])
    assert capsys.readouterr().out == ""


def test_coco_without_any_detection() -> None:
    _, gts = scene(0, n_img=5)
    dets = [np.zeros((0, 6), np.float32) for _ in gts]
    assert coco_evaluate_fast(dets, gts, 5)["AP50_95"] == 0.0
    assert coco_evaluate(dets, gts, [str(i) for i in range(5)])["AP50_95"] == 0.0


def test_p_and_r_at_the_best_mean_f1() -> None:
    # class 0: scores 0.9 TP, 0.8 FP, 0.3 TP, 0.1 FP, 2 objects; class 1: 0.6 TP, 1 object.
    # mean F1 by threshold t: t <= 0.1: (2/3, 1) -> 0.833; 0.1 < t <= 0.3: class 0 P 2/3 R 1 F1 0.8, class 1 F1 1
    # -> 0.9 (the best); 0.3 < t <= 0.6: (0.5, 1) -> 0.75; above: lower. The lowest grid score above 0.1 is 0.101.
    curves = []
    for tp, scores, npos in (([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1], 2), ([1], [0.6], 1)):
        tp, fp = np.cumsum(tp), np.cumsum(1 - np.array(tp))
        curves.append((tp / npos, tp / (tp + fp), np.array(scores)))
    out = best_f1(curves, np.array([2, 1]))
    assert out["f1_score_thres"] == pytest.approx(0.101)
    np.testing.assert_allclose(out["p_at_best_f1"], [2 / 3, 1.0])
    np.testing.assert_allclose(out["r_at_best_f1"], [1.0, 1.0])


def test_confusion_matrix_by_hand() -> None:
    # classes cat 0, dog 1, bird 2; one image: a cat at A, a dog at B, a bird at C, a difficult cat at D
    A, B, C, D = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]
    gt = SimpleNamespace(boxes=np.array([A, B, C, D], float), labels=np.array([0, 1, 2, 0]),
                         difficult=np.array([False, False, False, True]))
    dets = np.array([[*A, 0.9, 0],            # cat on the cat: cat/cat
                     [*B, 0.8, 0],            # cat on the dog: predicted cat, true dog
                     [100, 0, 110, 10, 0.7, 1],  # a dog on nothing: dog/background
                     [0, 0, 10, 9, 0.6, 0],   # a second cat on the cat (IoU 0.9): the cat is taken -> cat/background
                     [*D, 0.95, 0],           # on the difficult cat: left out
                     [*C, 0.3, 2]])           # the bird's, below the score threshold: the bird is missed
    m = confusion_matrix([dets], [gt], 3, score_thr=0.5, iou_thr=0.5)
    assert m.dtype == np.int64  # counts
    want = np.zeros((4, 4), int)
    want[0, 0] = want[0, 1] = want[1, 3] = want[0, 3] = want[3, 2] = 1  # rows predicted, columns true, 3 background
    np.testing.assert_array_equal(m, want)


def test_confusion_matrix_pairs_an_iou_exactly_at_the_threshold() -> None:
    # a 10x5 detection inside a 10x10 ground truth: IoU 50 / 100 = 0.5 exactly, a pair at iou_thr 0.5
    gt = SimpleNamespace(boxes=np.array([[0, 0, 10, 10]], float), labels=np.array([1]), difficult=np.array([False]))
    dets = np.array([[0, 0, 10, 5, 0.9, 0]])
    want = np.zeros((3, 3), int)
    want[0, 1] = 1  # predicted 0 on a true 1
    np.testing.assert_array_equal(confusion_matrix([dets], [gt], 2, iou_thr=0.5), want)
    want = np.zeros((3, 3), int)
    want[0, 2] = want[2, 1] = 1  # no pair: a false alarm and a miss
    np.testing.assert_array_equal(confusion_matrix([dets], [gt], 2, iou_thr=0.51), want)


def test_voc_evaluate_at_the_score_threshold_by_hand() -> None:
    # class 0: three objects; detections 0.9 on one (IoU 0.6: a hit at the default 0.5), 0.5 on another (a score
    # exactly at the default score threshold counts), 0.4 a false alarm. At score >= 0.5: 2 detections, 2 true:
    # P 1, R 2/3, F1 2 * 1 * 2/3 / (5/3) = 0.8. AP (all points): recall 1/3, 2/3 at precision 1 -> 2/3.
    # class 1: one object, one true detection at 0.3, under the threshold: P 0 (none kept), R 0, F1 0; AP 1.
    # class 2: no object: NaN everywhere, out of the means.
    a, b, c = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]
    gt = Record("0", "0.jpg", 100, 100, np.array([a, b, c, [60, 0, 70, 10]], np.float32), np.array([0, 0, 0, 1]),
                np.zeros(4, bool))
    dets = np.array([[0, 0, 10, 6, 0.9, 0], [*b, 0.5, 0], [80, 80, 90, 90, 0.4, 0], [60, 0, 70, 10, 0.3, 1]],
                    np.float32)
    out = voc_evaluate([dets], [gt], 3)
    np.testing.assert_allclose(out["precision"], [1.0, 0.0, np.nan])
    np.testing.assert_allclose(out["recall"], [2 / 3, 0.0, np.nan])
    np.testing.assert_allclose(out["f1"], [0.8, 0.0, np.nan])
    np.testing.assert_allclose(out["ap"], [2 / 3, 1.0, np.nan])
    # 07: recall >= t reached up to t = 0.6 at precision 1 (7 of 11 points) -> 7/11
    np.testing.assert_allclose(out["ap07"], [7 / 11, 1.0, np.nan])
    assert out["npos"].tolist() == [3, 1, 0]
    assert out["map"] == pytest.approx((2 / 3 + 1) / 2) and out["map07"] == pytest.approx((7 / 11 + 1) / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean of an empty selection: NaN said, not computed with a warning
        empty = voc_evaluate([dets[:0]], [Record("0", "0.jpg", 9, 9, np.zeros((0, 4), np.float32), np.zeros(0, int),
                                                  np.zeros(0, bool))], 3)
    assert np.isnan(empty["map"]) and np.isnan(empty["map07"]) and empty["f1_score_thres"] == 0.0
    assert out["npos"].dtype == np.int64


def test_precision_recall_and_f1_on_the_score_grid_by_hand() -> None:
    from utils.metrics.voc import F1_GRID, pr_on_grid

    # class 0 has objects but no detection (all zeros); class 1: scores 0.8 TP, 0.3 FP against 2 objects;
    # class 2: no objects (zeros whatever its detections)
    curves = [(np.zeros(0), np.zeros(0), np.zeros(0)),
              (np.array([0.5, 0.5]), np.array([1.0, 0.5]), np.array([0.8, 0.3])),
              (np.array([0.0]), np.array([0.0]), np.array([0.9])),
              (np.array([0.0, 0.25]), np.array([0.0, 0.5]), np.array([0.5, 0.4]))]  # FP 0.5, TP 0.4, 4 objects
    p, r, f1 = pr_on_grid(curves, np.array([1, 2, 0, 4]))
    # class 3 at t <= 0.4: P 1/2, R 1/4, F1 2 * 1/8 / (3/4) = 1/3; 0.4 < t <= 0.5: P 0, R 0, F1 0
    k = int(np.argmin(np.abs(F1_GRID - 0.4)))
    assert (p[3, k], r[3, k], f1[3, k]) == pytest.approx((0.5, 0.25, 1 / 3))
    assert (p[3, k + 1], r[3, k + 1], f1[3, k + 1]) == (0.0, 0.0, 0.0)
    at = {t: int(np.argmin(np.abs(F1_GRID - t))) for t in (0.0, 0.3, 0.301, 0.8, 0.801)}
    assert not p[[0, 2]].any() and not r[[0, 2]].any() and not f1[[0, 2]].any()
    # t <= 0.3: both kept, P 1/2, R 1/2, F1 1/2; 0.3 < t <= 0.8: P 1, R 1/2, F1 2/3; t > 0.8: none, P taken as 1, R 0
    for t, (pw, rw, fw) in ((0.0, (0.5, 0.5, 0.5)), (0.3, (0.5, 0.5, 0.5)), (0.301, (1, 0.5, 2 / 3)),
                            (0.8, (1, 0.5, 2 / 3)), (0.801, (1, 0, 0))):
        assert (p[1, at[t]], r[1, at[t]], f1[1, at[t]]) == pytest.approx((pw, rw, fw)), t


def confusion_loop(dets, gts, num_classes: int, score_thr: float, iou_thr: float) -> np.ndarray:
    """The confusion matrix written plainly: per image, every (detection, ground truth) pair at IoU >= iou_thr,
    the highest IoU first (ties in detection, then ground-truth order), each box paired at most once."""
    bg = num_classes
    m = np.zeros((num_classes + 1, num_classes + 1), int)
    for det, gt in zip(dets, gts, strict=True):
        det = [d for d in det.tolist() if d[4] >= score_thr]
        pairs = []
        for i, d in enumerate(det):
            for j, b in enumerate(gt.boxes.tolist()):
                iw = min(d[2], b[2]) - max(d[0], b[0])
                ih = min(d[3], b[3]) - max(d[1], b[1])
                inter = max(iw, 0) * max(ih, 0)
                iou = inter / ((d[2] - d[0]) * (d[3] - d[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
                if iou >= iou_thr:
                    pairs.append((-iou, i, j))
        used_d, used_g = set(), set()
        for _, i, j in sorted(pairs):
            if i in used_d or j in used_g:
                continue
            used_d.add(i), used_g.add(j)
            if not gt.difficult[j]:
                m[int(det[i][5]), int(gt.labels[j])] += 1
        for i, d in enumerate(det):
            if i not in used_d:
                m[int(d[5]), bg] += 1
        for j, label in enumerate(gt.labels.tolist()):
            if j not in used_g and not gt.difficult[j]:
                m[bg, label] += 1
    return m


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("score_thr", "iou_thr"), [(0.5, 0.5), (0.3, 0.7)])
def test_confusion_matrix_equals_a_plain_loop(seed: int, score_thr: float, iou_thr: float) -> None:
    dets, gts = scene(seed)  # scores rounded to 0.01: some are exactly 0.5 or 0.3, on the threshold
    assert any((d[:, 4] == score_thr).any() for d in dets)
    m = confusion_matrix(dets, gts, 5, score_thr=score_thr, iou_thr=iou_thr)
    ref = confusion_loop(dets, gts, 5, score_thr, iou_thr)
    assert m.max() > 1 and m[:5, :5].trace() > 10  # counts that add up, and pairs of the right class
    np.testing.assert_array_equal(m, ref)
    assert confusion_matrix(dets, gts, 5).tolist() == confusion_loop(dets, gts, 5, 0.5, 0.5).tolist()  # the defaults


def test_voc_match_keeps_images_apart_and_counts_an_iou_at_the_threshold() -> None:
    # two images with six ground truths of class 0 each, in a row; every one found once (the first images' fifth and
    # the second's first must not be taken for the same box), plus on image 1 a detection at IoU 0.5 exactly with a
    # seventh ground truth (10 x 10 against 10 x 5: 50 / 100), a TP as ">= 0.5" says
    row = np.array([[20 * k, 0, 20 * k + 10, 10] for k in range(6)], np.float32)
    g0 = Record("0", "0.jpg", 200, 50, row, np.zeros(6, int), np.zeros(6, bool))
    g1 = Record("1", "1.jpg", 200, 50, np.concatenate([row, [[0, 30, 10, 35]]]).astype(np.float32), np.zeros(7, int),
                np.zeros(7, bool))
    score = np.linspace(0.9, 0.4, 13)
    d0 = np.concatenate([row, score[:6, None], np.zeros((6, 1))], 1)
    d1 = np.concatenate([np.concatenate([row, [[0, 30, 10, 40]]]), score[6:, None], np.zeros((7, 1))], 1)
    pr = voc_match([d0, d1], [g0, g1], 0)
    assert pr.npos == 13 and pr.tp.tolist() == [1.0] * 13 and pr.fp.tolist() == [0.0] * 13


def test_the_metrics_need_one_ground_truth_per_detection_list() -> None:
    dets, gts = scene(0, n_img=3)
    with pytest.raises(ValueError, match="zip"):
        confusion_matrix(dets[:2], gts, 5)


def test_the_per_class_table_as_printed() -> None:
    from utils.metrics.voc import format_table, per_class_table

    boxes = np.array([[0, 0, 5, 5], [5, 5, 9, 9]], np.float32)
    records = [Record("0", "0.jpg", 10, 10, boxes, np.array([0, 1]), np.array([False, True])),
               Record("1", "1.jpg", 10, 10, boxes[:1], np.array([0]), np.array([False]))]
    nan = float("nan")
    result = {"voc": {"npos": np.array([2, 0]), "p_at_best_f1": np.array([0.5, 0.0]), "r_at_best_f1": np.array([1.0, 0.0]),
                      "ap07": np.array([0.75, nan]), "ap": np.array([0.8, nan]), "f1_score_thres": 0.25},
              "coco": {"per_class_AP50_95": np.array([0.4, nan]), "AP50_95": 0.4, "AP50": 0.8, "AP75": 0.35, "APs": 0.1,
                       "APm": 0.2, "APl": -1.0},
              "precision": 0.5, "recall": 1.0, "map50_07": 0.75, "map50": 0.8, "map50_95": 0.4}
    rows = per_class_table(result, records, ["circle", "square"])
    # square's only object is difficult: in no image's count
    assert [(r["class"], r["images"], r["objects"]) for r in rows] == [("circle", 2, 2), ("square", 0, 0)]
    assert format_table(rows, result).splitlines() == [
        "class            images objects       P       R  AP50-07    AP50  AP50-95",
        "circle                2       2   0.500   1.000    0.750   0.800    0.400",
        "square                0       0   0.000   0.000      -       -        -  ",  # NaN: no object to score
        "all                           2   0.500   1.000    0.750   0.800    0.400",
        "P and R at score 0.250 (the best mean F1). COCO-style: AP50-95 0.4000  AP50 0.8000  AP75 0.3500  APs 0.1000  "
        "APm 0.2000  APl -1.0000"]
