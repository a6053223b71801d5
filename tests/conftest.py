from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from helpers import RUN_MARK, server, strict_loads

from volley.engine import fake
from volley.measure import session

FakeSession = Callable[[fake.FakeCoordinator], fake.FakeCoordinator]

# The suite's benchmarks keep no history of sittings (volley.measure.history): each test sees a
# first sitting, whatever ran before it. Tests of the history give --history themselves.
os.environ["VOLLEY_HISTORY"] = "off"


def marked_processes(mark: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get(RUN_MARK) == mark:
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Every process a test starts inherits a mark; none may outlive the suite."""
    mark = uuid.uuid4().hex
    os.environ[RUN_MARK] = mark
    yield
    survivors = [p for p in marked_processes(mark) if p.status() != psutil.STATUS_ZOMBIE]
    described = [f"{p.pid} {' '.join(p.cmdline())}" for p in survivors if p.is_running()]
    for p in survivors:
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not described, f"processes left behind by the tests: {described}"


@pytest.fixture(scope="session")
def c_threaded() -> Path:
    return server("c-threaded")


@pytest.fixture(scope="session", autouse=True)
def every_json_is_strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every JSON file the suite's runs wrote parses with a strict parser (no NaN/Infinity)."""
    yield
    bad = []
    for path in tmp_path_factory.getbasetemp().rglob("*.json*"):
        if not path.is_file() or path.suffix not in (".json", ".jsonl"):
            continue
        text = path.read_text(errors="replace")
        documents = text.splitlines() if path.suffix == ".jsonl" else [text]
        for document in documents:
            try:
                if document.strip():
                    strict_loads(document)
            except ValueError as e:
                bad.append(f"{path}: {e}")
                break
    assert not bad, f"JSON that strict parsers refuse: {bad}"


@pytest.fixture
def fake_session(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeSession:
    """Benchmarks in this test play on a fake engine (volley.engine.fake), in ``tmp_path``:
    ``fake_session(engine)`` puts ``engine`` and its clock in place of the coordinator's."""
    monkeypatch.chdir(tmp_path)

    def use(engine: fake.FakeCoordinator) -> fake.FakeCoordinator:
        monkeypatch.setattr(session, "start_engine", fake.starter(engine))
        monkeypatch.setattr(session, "clock", engine.clock)
        return engine

    return use
