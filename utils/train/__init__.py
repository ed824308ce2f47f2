"""The training room: a run in run order (``fit``), one epoch and one evaluation (``engine``), the
optimizer, lr schedule, freezing and time budget (``optim``), the weight average (``ema``), the one
checkpoint schema (``checkpoint``), what resume may change (``resume``), the epoch log (``results``)
and clean stops (``signals``). It imports nets/, ``utils.config``, ``utils.data``, ``utils.infer.postprocess``,
``utils.metrics`` and ``utils.runtime``."""
