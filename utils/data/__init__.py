"""The data room: datasets on disk become records (``records``, ``images``, ``voc``, ``coco``,
``splits``), records become training batches (``augment``, ``dataset``), and ``synthetic`` makes the
demo set. It imports ``utils.config`` and ``utils.boxes`` only."""
