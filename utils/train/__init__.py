"""The training room: a run in run order (``setup`` builds it: the config for this machine, data, model, loss,
optimizer, restored state; ``fit`` runs it: the epochs, the time budget, the result), one epoch and one
evaluation (``engine``), the optimizer, lr schedule, freezing and time budget (``optim``), the weight average
(``ema``), what resume may change (``resume``), the epoch log (``results``), what a run shows a person
(``report``) and clean stops (``signals``). It imports nets/, ``utils.checkpoint``, ``utils.config``, ``utils.console``,
``utils.data``, ``utils.infer.postprocess``, ``utils.metrics``, ``utils.plots`` and ``utils.runtime``."""
