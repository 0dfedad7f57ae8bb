"""Imports run one way: every module of ``worldflux_gym`` imports only its own package and the layers
below it. The data flow reads the same way: real env -> episodes -> trainer -> checkpoint -> dream
-> agent -> (pipelines, video, audit) -> the command line.

The layers, bottom to top (a module's layer is that of its package, the first name under
``worldflux_gym``):

0. ``version``: the library's version, which every layer may read;
1. ``core``: the contract, the save format, shared checks;
2. ``models`` and ``data``: the families; collection, storage, and the policy adapter collection
   acts with. They share a rank: neither imports the other;
3. ``training``: the trainer, its run directory, ``fit_world_model``;
4. ``dream``: the dream envs, the dream resolver, and all they need to render frames;
5. ``agents``: SB3 recipes, training in the dream, evaluation in the real env;
6. ``pipelines``: the Dyna loop and the closed-loop fine-tune, over everything below;
7. ``video``: recording and playing dreams;
8. ``audit``: auditing and ranking agents;
9. the command line (``cli``) and the package's ``__init__`` (it registers the ids);
10. ``__main__`` (``python -m worldflux_gym``), which runs the command line.

The issue that set this order (21) lists the consumers as one tier, "pipelines, audit and video".
Within that tier the rule is: pipelines import neither of the others, video imports neither, and
the audit may import video (a report embeds clips of its worst episodes, recorded by
``video.record_dream``), so video ranks below audit. Packages of the same rank (``models``,
``data``) may not import each other. Every import statement counts: at module level, inside
functions (lazy imports) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "worldflux_gym"

LAYERS = {
    "version": 0,
    "core": 1,
    "models": 2,
    "data": 2,
    "training": 3,
    "dream": 4,
    "agents": 5,
    "pipelines": 6,
    "video": 7,
    "audit": 8,
    "cli": 9,
    "": 9,  # worldflux_gym/__init__.py: the facade, which registers the dream ids
    "__main__": 10,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def area(module: str) -> str:
    """``worldflux_gym.dream.core`` -> ``dream``; the package itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int:
    """The layer of an imported module; a name of the package's ``__init__`` (``from worldflux_gym
    import __version__``) is the top layer's."""
    return LAYERS.get(area(module), LAYERS[""])


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``worldflux_gym`` import in ``source``, the code of ``module``
    (relative imports resolved; ``from worldflux_gym import x`` counts as importing ``x``)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] if base == "worldflux_gym" else [base]
            found += [(node.lineno, target) for target in targets]
    return [
        (line, name) for line, name in found if name == "worldflux_gym" or name.startswith("worldflux_gym.")
    ]


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Each import of ``source`` (the code of ``module``) that runs back up, as ``line: what``."""
    mine = area(module)
    problems = []
    for line, target in imported_modules(source, module, is_package):
        if area(target) == mine and mine:
            continue  # within one package
        if layer_of(target) >= LAYERS[mine]:
            problems.append(
                f"{line}: {module} ({mine or 'the package'}, layer {LAYERS[mine]}) imports {target} "
                f"(layer {layer_of(target)})"
            )
    return problems


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "shipped" not in p.parts)


def test_every_package_has_a_layer():
    missing = sorted({area(module_name(p)) for p in _modules()} - set(LAYERS))
    assert not missing, f"give these parts of worldflux_gym a layer in LAYERS (and the docstring): {missing}"


def test_imports_run_one_way():
    problems = []
    for path in _modules():
        where = path.relative_to(PACKAGE.parent)
        found = violations(path.read_text(), module_name(path), path.name == "__init__.py")
        problems += [f"{where}:{problem}" for problem in found]
    assert not problems, "imports that run back up (see the layers in this file):\n" + "\n".join(problems)


def test_the_check_finds_imports_that_run_back_up():
    lazy_upward = "def f():\n    from worldflux_gym.video import record_dream\n"
    top_level = "from worldflux_gym import __version__\n"
    assert len(violations(top_level + lazy_upward, "worldflux_gym.core.x")) == 2
    assert violations("from worldflux_gym.version import __version__\n", "worldflux_gym.core.x") == []
    assert violations("from worldflux_gym.models import ensemble\n", "worldflux_gym.data.x")  # same rank
    assert violations("from worldflux_gym.video import record_dream\n", "worldflux_gym.audit.x") == []
    assert violations("from worldflux_gym.audit import audit_agent\n", "worldflux_gym.video.x")
    assert violations("from ..training import fit\n", "worldflux_gym.dream.x") == []
    assert violations("from ..agents import load_agent\n", "worldflux_gym.dream.x")
    assert violations("from . import core\n", "worldflux_gym.dream", is_package=True) == []
