"""predict.py's sources beyond files and folders (globs, .txt lists, http(s) image URLs, live streams that drop),
served by a small HTTP server on 127.0.0.1 that each test starts, never the internet; and its outputs: YOLO-format
labels (against a hand computation), crops."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

import predict as predict_cli
from tests.planted import BOX, H, W, image, read_txt
from utils.data.records import DataReport
from utils.data.yolo import parse_label_file
from utils.infer import sources
from utils.infer.outputs import yolo_lines
from utils.infer.sources import SourceError, resolve_source


def run(tmp_path: Path, source: str, *extra: str) -> tuple[int, Path]:
    status = predict_cli.main(["--weights", "planted.pt", "--source", source, "--save-dir", str(tmp_path / "runs"),
                               "--no-save", "--save-txt-voc", *extra])
    return status, sorted((tmp_path / "runs").iterdir())[-1]


# ---------------------------------------------------------------- outputs


def test_yolo_labels_are_normalized_centre_and_size_as_computed_by_hand(tmp_path: Path, planted) -> None:
    src = tmp_path / "one.jpg"
    cv2.imwrite(str(src), image())
    status, out = run(tmp_path, str(src), "--save-txt", "--save-conf", "--save-crop")
    assert status == 0
    # BOX (42, 30) - (110, 90) in a 200 x 120 image, class 2 (triangle):
    # cx = 76 / 200 = 0.38, cy = 60 / 120 = 0.5, w = 68 / 200 = 0.34, h = 60 / 120 = 0.5
    (line,) = (out / "labels" / "one.txt").read_text().splitlines()
    c, cx, cy, w, h, score = line.split()
    assert c == "2" and float(score) > 0.99
    np.testing.assert_allclose([float(cx), float(cy), float(w), float(h)], [0.38, 0.5, 0.34, 0.5], atol=1e-3)
    # the crop: the box's pixels, rounded outwards
    (crop,) = (out / "crops" / "triangle").iterdir()
    assert crop.name == "one_1.jpg"
    h, w = cv2.imread(str(crop)).shape[:2]
    assert 60 <= h <= 62 and 68 <= w <= 70  # 60 x 68, and a pixel more on a side the decoded box overlaps
    b, g, r = cv2.imread(str(crop)).reshape(-1, 3).mean(0)  # the image's green rectangle (40, 30) - (110, 90) is there
    assert g > 180 and b < 40 and r < 40, (b, g, r)
    # without --save-conf: five numbers, which the toolkit's own YOLO-format reader takes back as the box
    status, out = run(tmp_path, str(src), "--save-txt")
    assert (out / "labels" / "one.txt").read_text().count(" ") == 4
    report = DataReport()
    boxes, classes = parse_label_file(out / "labels" / "one.txt", W, H, 6, report)
    np.testing.assert_allclose(boxes[0], BOX, atol=0.2)
    assert classes == [2] and not report.problems


def test_yolo_lines_format() -> None:
    dets = np.array([[10.0, 20.0, 30.0, 60.0, 0.875, 1.0], [0.0, 0.0, 100.0, 50.0, 0.5, 0.0]], np.float32)
    # 100 x 50 image: box 1 -> cx 0.2, cy 0.8, w 0.2, h 0.8; box 2 -> the whole image
    assert yolo_lines(dets, (50, 100, 3)) == "1 0.2 0.8 0.2 0.8\n0 0.5 0.5 1 1\n"
    assert yolo_lines(dets, (50, 100, 3), conf=True).splitlines()[0] == "1 0.2 0.8 0.2 0.8 0.875"
    assert yolo_lines(dets[:0], (50, 100)) == ""


# ---------------------------------------------------------------- globs and lists


def test_glob_and_txt_list_sources(tmp_path: Path, planted) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/x.png", "a/deep/y.png", "a/z.jpg"):
        cv2.imwrite(str(tmp_path / name), image())
    src = resolve_source(str(tmp_path / "a" / "**" / "*.png"))
    assert src.kind == "images" and [Path(f).name for f in src.files] == ["y.png", "x.png"]
    status, out = run(tmp_path, str(tmp_path / "a" / "**" / "*.png"))
    assert status == 0 and sorted(p.name for p in (out / "labels_voc").iterdir()) == ["deep__y.txt", "x.txt"]
    listing = tmp_path / "a" / "list.txt"
    listing.write_text("# my images\nz.jpg\n\ndeep/y.png\n" + str(tmp_path / "a" / "x.png") + "\n")
    status, out = run(tmp_path, str(listing))
    assert status == 0 and sorted(p.name for p in (out / "labels_voc").iterdir()) == ["deep__y.txt", "x.txt", "z.txt"]
    ((_, _, box),) = read_txt(out / "labels_voc" / "z.txt")
    np.testing.assert_allclose(box, BOX, atol=0.15)
    with pytest.raises(SourceError, match="match"):
        resolve_source(str(tmp_path / "a" / "*.gif"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(SourceError, match="lists no images"):
        resolve_source(str(tmp_path / "empty.txt"))


# ---------------------------------------------------------------- http(s): images and streams


class Served:
    """What the test server answers: an image at /img.jpg, an MJPEG stream at /live.mjpg that sends ``bursts[k]``
    frames on its k-th connection and then closes it (404 once the bursts are spent)."""

    def __init__(self, bursts: list[int]) -> None:
        self.jpeg = cv2.imencode(".jpg", image())[1].tobytes()
        self.bursts, self.connections = list(bursts), 0


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served([4, 3])

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802  (the http.server name)
            if self.path == "/img.jpg":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(served.jpeg)))
                self.end_headers()
                self.wfile.write(served.jpeg)
                return
            if self.path != "/live.mjpg" or served.connections >= len(served.bursts):
                self.send_error(404)
                return
            frames = served.bursts[served.connections]
            served.connections += 1
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for _ in range(frames):
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(served.jpeg)).encode() + b"\r\n\r\n" + served.jpeg + b"\r\n")
            self.wfile.flush()
            self.close_connection = True  # the stream drops

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_http_image_url(tmp_path: Path, planted, server) -> None:
    url, _ = server
    assert resolve_source(f"{url}/img.jpg").files == [f"{url}/img.jpg"]
    status, out = run(tmp_path, f"{url}/img.jpg", "--save-txt")
    assert status == 0
    ((_, _, box),) = read_txt(out / "labels_voc" / "img.txt")
    np.testing.assert_allclose(box, BOX, atol=0.15)
    status, out = run(tmp_path, f"{url}/missing.jpg", "--json")
    assert status == 0 and not list((out / "labels_voc").iterdir())  # skipped, named, not fatal


def test_a_stream_that_drops_is_reopened_then_ends_with_one_line_and_keeps_its_frames(
        tmp_path: Path, planted, server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    url, served = server
    waits: list[float] = []  # the pauses between tries, recorded instead of slept
    real = sources._stream_batches
    monkeypatch.setattr(sources, "_stream_batches", lambda *a: real(*a[:3], waits.append))
    assert resolve_source(f"{url}/live.mjpg").kind == "stream"
    status = predict_cli.main(["--weights", "planted.pt", "--source", f"{url}/live.mjpg", "--save-dir",
                               str(tmp_path / "runs"), "--save-txt-voc"])
    err = capsys.readouterr().err
    assert status == 1
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert line == (f"error: {url}/live.mjpg stopped giving frames and did not come back after 3 tries; "
                    "the 7 frames before are kept")
    assert served.connections == 2 and err.count("dropped; opening it again") == 4  # once after 4 frames, 3 at the end
    out = tmp_path / "runs" / "exp"
    assert sorted(p.name for p in (out / "labels_voc").iterdir()) == sorted(f"live_{i}.txt" for i in range(1, 8))
    cap = cv2.VideoCapture(str(out / "live.mp4"))  # the video of the frames before the end is complete
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 7
    assert waits == [1.0, 1.0, 2.0, 4.0]  # the first drop, then three tries 1, 2 and 4 s apart
