"""Fixtures shared by the test files."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a small model trained on its own 16 images (tests/trained.py), made once per session."""
    from tests.trained import train_small_model

    return train_small_model(tmp_path_factory.mktemp("trained"))


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch):
    """predict.py and detector.py load the stand-in model of tests/planted.py whatever --weights says; its Backend."""
    import detector
    import predict
    from tests.planted import planted_backend

    backend = planted_backend()
    monkeypatch.setattr(predict, "load_backend", lambda *a, **k: backend)
    monkeypatch.setattr(detector, "load_backend", lambda *a, **k: backend)
    return backend
