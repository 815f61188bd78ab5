"""The Thecal pytest plugin: HIL tests against a fresh emulated pump, and scenario files.

Installed with Thecal (entry point `pytest11`), so a test suite that has `pip install
thecal` can write:

    def test_lockout(thecal_pump):
        thecal_pump.record_fill()
        c = thecal_pump.clinician
        c.program(load_program("therapy.toml", c.next_command_id()))
        c.start()
        assert thecal_pump.patient.bolus().decision is BolusDecision.LOCKOUT

Fixtures (each made only when a test asks for it):
  thecal_pump       a fresh pump per test (tools.hil.Pump): `thecal emulator` in lockstep
                    with the firmware in its process, or with --thecal-split in a `thecal
                    firmware` process of its own; a capture, state and logs under tmp_path
  thecal_clinician  thecal_pump.clinician: its client, signing as the clinician
  thecal_patient    thecal_pump.patient: the same client, signing as the patient
  thecal_sim        thecal_pump.sim: the client for sim-control (signed with the sim key)

Markers: `thecal_model(**figures)` overrides figures of emulator/model.py for the pump;
`thecal_seed(n)` the emulator's seed (default 0). Options: --thecal-split,
--thecal-report-frames N.

When a test that used a pump fails, its report gets a section `thecal capture`: the
capture file's path and the host-link frames of the test, decoded (the last N), and the
processes' stderr when they wrote any. Files named `*.scenario.toml` are collected as
tests (tools/scenario.py); each runs on a fresh pump of its own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Thecal itself is imported only when a fixture or a scenario file needs it: every pytest
# run in an environment that has Thecal installed loads this module.
if TYPE_CHECKING:
    from tools.client import Client

    from .hil import Pump, RoleClient
    from .scenario import Scenario

SCENARIO_SUFFIX = ".scenario.toml"  # tools.scenario.SUFFIX, spelled out for the reason above
PUMP_KEY = pytest.StashKey["Pump"]()
_REPORTED_KEY = pytest.StashKey[bool]()
DEFAULT_REPORT_FRAMES = 60
_STDERR_LINES = 40


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("thecal", "Thecal emulated pump (thecal_pump fixture, *.scenario.toml files)")
    group.addoption(
        "--thecal-split",
        action="store_true",
        default=False,
        help="run the pump firmware in its own process (`thecal firmware`) instead of inside the emulator",
    )
    group.addoption(
        "--thecal-report-frames",
        type=int,
        default=DEFAULT_REPORT_FRAMES,
        metavar="N",
        help=f"decoded host-link frames in a failed test's report: the last N (0 all, default {DEFAULT_REPORT_FRAMES})",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "thecal_model(**figures): pump-model figures (emulator/model.py) for the thecal_pump fixture",
    )
    config.addinivalue_line("markers", "thecal_seed(n): the emulator's seed for the thecal_pump fixture (default 0)")


def _split(config: pytest.Config) -> bool:
    return bool(config.getoption("thecal_split"))


def _model_figures(node: pytest.Item) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    # The closest marker wins key by key: a test's own figures over its class's and module's.
    for marker in reversed(list(node.iter_markers("thecal_model"))):
        if marker.args:
            raise ValueError("thecal_model takes figures by name, e.g. thecal_model(stroke_nl=250)")
        figures.update(marker.kwargs)
    return figures


def _seed(node: pytest.Item) -> int:
    marker = node.get_closest_marker("thecal_seed")
    if marker is None:
        return 0
    if len(marker.args) != 1 or marker.kwargs or not isinstance(marker.args[0], int) or marker.args[0] < 0:
        raise ValueError("thecal_seed takes one whole number >= 0, e.g. thecal_seed(7)")
    return marker.args[0]


@pytest.fixture
def thecal_pump(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pump]:
    """A fresh emulated pump for this test (see the module doc); stopped after it."""
    from emulator.model import ModelError

    from .hil import PumpStartError, start_pump

    node = request.node
    try:
        figures, seed = _model_figures(node), _seed(node)
    except ValueError as e:
        pytest.fail(f"@pytest.mark.{e}", pytrace=False)
    try:
        pump = start_pump(tmp_path / "thecal", split=_split(request.config), model=figures, seed=seed)
    except ModelError as e:
        pytest.fail(f"@pytest.mark.thecal_model: {e}", pytrace=False)
    except PumpStartError as e:
        pytest.fail(f"the pump did not start: {e}", pytrace=False)
    node.stash[PUMP_KEY] = pump
    try:
        yield pump
    finally:
        pump.stop()


@pytest.fixture
def thecal_clinician(thecal_pump: Pump) -> RoleClient:
    """The pump's client, signing as the clinician."""
    return thecal_pump.clinician


@pytest.fixture
def thecal_patient(thecal_pump: Pump) -> RoleClient:
    """The pump's client, signing as the patient."""
    return thecal_pump.patient


@pytest.fixture
def thecal_sim(thecal_pump: Pump) -> Client:
    """The pump's client for sim-control (advance, faults, ground truth ...)."""
    return thecal_pump.sim


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    pump = item.stash.get(PUMP_KEY, None)
    if pump is None or not report.failed or item.stash.get(_REPORTED_KEY, False):
        return
    item.stash[_REPORTED_KEY] = True
    # The emulator writes its capture out as it exits: stop it before decoding. The
    # fixture's own teardown then finds it stopped.
    pump.stop()
    report.sections.append(("thecal capture", pump.traffic_report(item.config.getoption("thecal_report_frames"))))
    for name, text in pump.logs().items():
        if text.strip():
            tail = text.rstrip().splitlines()[-_STDERR_LINES:]
            report.sections.append((f"thecal {name} stderr ({pump.files.directory})", "\n".join(tail)))


# ==================================================================== scenario files


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith(SCENARIO_SUFFIX):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    """A `*.scenario.toml` file: one test, checked in full when collected."""

    def collect(self) -> Iterator[ScenarioItem]:
        from .scenario import ScenarioError, load_scenario

        try:
            scenario = load_scenario(self.path)
        except ScenarioError as e:
            where = f"{e.where}: " if e.where else ""
            raise self.CollectError(f"bad scenario: {_shown(self)}: {where}{e.message}") from None
        yield ScenarioItem.from_parent(self, name=self.path.name.removesuffix(SCENARIO_SUFFIX), scenario=scenario)


def _shown(node: pytest.Node) -> Path:
    """A node's file as people ran it: relative to the rootdir when it is inside it."""
    try:
        return node.path.relative_to(node.config.rootpath)
    except ValueError:
        return node.path


def _tmp_dir(config: pytest.Config, name: str) -> Path:
    factory = getattr(config, "_tmp_path_factory", None)  # what the tmp_path fixture uses
    if factory is not None:
        return factory.mktemp(name, numbered=True)
    return Path(tempfile.mkdtemp(prefix=f"thecal-{name}-"))


class ScenarioItem(pytest.Item):
    """One scenario run on a fresh pump of its own."""

    def __init__(self, *, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario

    def runtest(self) -> None:
        from .hil import start_pump
        from .scenario import run_scenario

        s = self.scenario
        pump = start_pump(_tmp_dir(self.config, self.name), split=_split(self.config), model=s.model, seed=s.seed)
        self.stash[PUMP_KEY] = pump
        try:
            run_scenario(s, pump)
        finally:
            pump.stop()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from .hil import PumpStartError
        from .scenario import ScenarioFailure

        # A scenario's failure is its file's business, not the plugin's: no traceback.
        if isinstance(excinfo.value, ScenarioFailure | PumpStartError):
            return f"scenario {self.scenario.name!r} ({_shown(self)}):\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario: {self.scenario.name}"
