"""The inference room: raw maps to detections (``postprocess``), one backend over a checkpoint, Darknet
weights or an ONNX graph (``backend``), and drawing (``draw``). It imports nets/, ``utils.config`` and
the checkpoint schema (``utils.train.checkpoint``) that every trained model is described by."""
