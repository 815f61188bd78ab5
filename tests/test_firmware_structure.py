"""The firmware's shape, checked from its source: one guard alone commands the motor,
dependencies point down, the core does no I/O of its own, and the emulator is handed the
firmware instead of assembling it (issue 11; docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"


def modules(package: Path) -> dict[str, tuple[str, ast.Module]]:
    """Every module of a package by dotted name: (the package its relative imports start
    from, its syntax tree)."""
    out = {}
    for f in sorted(package.rglob("*.py")):
        parts = f.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (".".join(parts[:-1]), ast.parse(f.read_text(), str(f)))
    return out


def imports(module: tuple[str, ast.Module]) -> set[str]:
    """Absolute names of what a module imports (relative imports resolved)."""
    package, tree = module
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, mod] if mod else base)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


FW = modules(FIRMWARE)


def builders(tree: ast.Module) -> set[str]:
    return {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("MotorRun", "MotorStop")
    }


def test_only_the_guard_builds_motor_run_and_motor_stop():
    movers = {name: sorted(b) for name, (_, tree) in FW.items() if (b := builders(tree))}
    assert movers == {"firmware.guard": ["MotorRun", "MotorStop"]}, movers


def test_the_structure_check_finds_a_motor_command_built_elsewhere():
    # The check itself can fail: a module that builds MotorStop is found.
    tree = ast.parse("from protocol.messages import MotorStop\n\ndef f(out):\n    out.send(MotorStop(run_id=1))\n")
    assert builders(tree) == {"MotorStop"}


def test_relative_imports_resolve_to_the_modules_they_name():
    board = FW["firmware.board"]
    assert {"firmware.controller", "firmware.nvm.MemoryNvm", "firmware.board.filenvm"} <= imports(board)
    assert "firmware.rules.limit24h" in imports(FW["firmware.rules.run"])


def test_nothing_in_the_firmware_imports_the_controller_but_the_board():
    users = {name for name, module in FW.items() if "firmware.controller" in imports(module)}
    assert users <= {"firmware.board", "firmware.board.runner"}, users


@pytest.mark.parametrize("name", sorted(n for n in FW if n.startswith("firmware.rules")))
def test_rules_import_nothing_that_holds_state_or_does_io(name):
    allowed_firmware = {"firmware.dose", "firmware.history", "firmware.prescription", "firmware.delivery"}
    allowed_firmware |= {"firmware.druglib", "firmware.rules"}
    for mod in imports(FW[name]):
        if mod.startswith("firmware."):
            assert any(mod == a or mod.startswith(a + ".") for a in allowed_firmware), (name, mod)
        else:
            assert mod.split(".")[0] in (
                "__future__",
                "collections",
                "dataclasses",
                "enum",
                "itertools",
                "operator",
                "protocol",
            ), (
                name,
                mod,
            )


def test_the_firmware_imports_nothing_from_the_host_tools_or_the_emulator():
    for name, module in FW.items():
        bad = {m for m in imports(module) if m.split(".")[0] in ("tools", "emulator")}
        assert not bad, (name, bad)


def test_the_core_does_no_io_only_the_board_does():
    io = {"os", "select", "serial", "tomllib", "json", "pathlib"}
    for name, module in FW.items():
        if name.startswith("firmware.board") or name == "firmware.therapy":
            continue  # the board is the edge; the state diagram's writer serves `thecal diagram`
        used = {m.split(".")[0] for m in imports(module)} & io
        assert not used, (name, used)


def test_the_emulator_does_not_assemble_the_firmware():
    for name, module in modules(ROOT / "emulator").items():
        bad = {m for m in imports(module) if m.split(".")[0] == "firmware"}
        assert not bad, (name, bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first walk (each reported once per entry)."""
    found, state = [], {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return found


def test_the_firmware_has_no_import_cycle():
    graph = {name: {m for m in imports(module) if m in FW and m != name} for name, module in FW.items()}
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
