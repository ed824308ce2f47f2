"""Everything around the model: ``config`` (the keys and how a config is read), ``data`` (datasets to
batches), ``train`` (a run), ``infer`` (backends, post-processing, drawing), ``metrics`` (VOC and COCO AP),
``boxes`` (box formats and IoU), ``runtime`` (device, seeds, ranks, run folders), ``console`` (the
programs' logging and one-line errors) and ``plots``. nets/ imports only ``utils.boxes`` from here."""
