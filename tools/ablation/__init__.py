"""tools/ablate.py's parts: the settings a sweep runs (``settings``), the runs themselves (``runner``), the
statistics over seeds (``stats``) and the reports (``report``)."""
