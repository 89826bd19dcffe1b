"""The C fake implements every NVML symbol the plugin's code can reach through pynvml.

Walks internal/ by AST for each pynvml function it calls (`<anything>.nvmlX(...)`, and
names given as strings, as in `hasattr(lib, "nvmlX")`), maps each to the C symbols
pynvml's wrapper looks up (`_nvmlGetFunctionPointer("...")`, following the wrapper's
calls into other pynvml functions and module-level aliases), and fails naming any
symbol the built library lacks. Adding an NVML call to the plugin without adding it
to the fake fails here, before any integration test runs on a half-faked library.
"""

from __future__ import annotations

import ast
import ctypes
import re
from collections import defaultdict
from pathlib import Path

import pynvml

from gdp_hack.nvmlfake import LIBRARY

INTERNAL = Path(__file__).parents[2] / "internal"
NVML_NAME = re.compile(r"^nvml[A-Z]\w*$")


def plugin_calls(root: Path) -> dict[str, list[str]]:
    """pynvml function name -> where our code uses it ("file:line")."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value
            if name and NVML_NAME.match(name):
                found[name].append(f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}")
    return dict(found)


def wrapper_symbols() -> dict[str, set[str]]:
    """pynvml function name -> every C symbol calling it may look up."""
    tree = ast.parse(Path(pynvml.__file__).read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    aliases = {
        target.id: node.value.id
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id in functions
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def direct(name: str) -> tuple[set[str], set[str]]:
        symbols, callees = set(), set()
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                callee = node.func.id
                first = node.args[0] if node.args else None
                if callee == "_nvmlGetFunctionPointer" and isinstance(first, ast.Constant):
                    symbols.add(str(first.value))
                elif callee in functions or callee in aliases:
                    callees.add(aliases.get(callee, callee))
        return symbols, callees

    def resolve(name: str, seen: set[str]) -> set[str]:
        if name in seen:
            return set()
        seen.add(name)
        symbols, callees = direct(name)
        for callee in callees:
            symbols |= resolve(callee, seen)
        return symbols

    names = set(functions) | set(aliases)
    return {name: resolve(aliases.get(name, name), set()) for name in names}


def missing_symbols(root: Path, library: Path) -> list[str]:
    """One line per problem: a pynvml call whose C symbol the fake lacks, or no such pynvml call."""
    lib = ctypes.CDLL(str(library))
    symbols = wrapper_symbols()
    problems = []
    for name, where in sorted(plugin_calls(root).items()):
        if name not in symbols:
            problems.append(f"{name} (at {where[0]}): pynvml has no such function")
            continue
        for symbol in sorted(symbols[name]):
            if not hasattr(lib, symbol):
                problems.append(f"{name} (at {where[0]}) needs C symbol {symbol}, which the fake lacks")
    return problems


def test_the_fake_has_every_symbol_the_plugin_reaches(nvml_fake_lib: Path) -> None:
    calls = plugin_calls(INTERNAL)
    # The walk sees the calls that matter (a walker that finds nothing would pass vacuously).
    assert {"nvmlInit", "nvmlDeviceGetHandleByIndex", "nvmlEventSetWait_v2", "nvmlDeviceGetPciInfo"} <= set(
        calls
    )
    assert missing_symbols(INTERNAL, nvml_fake_lib / LIBRARY) == []
    # Not called by name, but by every NVMLError whose code pynvml does not name itself.
    assert hasattr(ctypes.CDLL(str(nvml_fake_lib / LIBRARY)), "nvmlErrorString")


def test_the_walk_follows_pynvml_wrappers_to_their_symbols() -> None:
    symbols = wrapper_symbols()
    assert symbols["nvmlInit"] == {"nvmlInitWithFlags"}
    assert symbols["nvmlDeviceGetPciInfo"] == {"nvmlDeviceGetPciInfo_v3"}
    assert symbols["nvmlDeviceGetMemoryInfo"] == {"nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2"}
    assert symbols["nvmlEventSetWait"] == {"nvmlEventSetWait_v2"}


def test_a_call_the_fake_lacks_fails_the_check(tmp_path: Path, nvml_fake_lib: Path) -> None:
    code = tmp_path / "internal/probe.py"
    code.parent.mkdir()
    code.write_text(
        "def read(lib, handle):\n"
        "    lib.nvmlDeviceGetHandleByIndex(0)\n"
        "    return lib.nvmlDeviceGetPowerUsage(handle), lib.nvmlDeviceGetNoSuchThing(handle)\n"
    )
    assert missing_symbols(code.parent, nvml_fake_lib / LIBRARY) == [
        "nvmlDeviceGetNoSuchThing (at internal/probe.py:3): pynvml has no such function",
        "nvmlDeviceGetPowerUsage (at internal/probe.py:3) needs C symbol nvmlDeviceGetPowerUsage, "
        "which the fake lacks",
    ]
