"""The inference room: a backend over a checkpoint, Darknet weights or an exported graph (``backend``), raw maps to
detections (``postprocess``), images to detections in their own pixels (``predictor``), what ``--source`` names
(``sources``), what predict.py writes (``outputs``), a model scored on a dataset (``evaluation``), graphs for other
runtimes (``export``) and drawing (``draw``). It imports nets/, ``utils.config``, ``utils.data``, the checkpoint
schema (``utils.checkpoint``) and, for evaluation, ``utils.train.engine.evaluate``, the one evaluation function."""
