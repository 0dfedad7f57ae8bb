"""The examples in the main entry points' docstrings run (doctest), in a fresh working directory."""

from __future__ import annotations

import doctest
import importlib

import pytest

# module: the objects whose docstrings carry the examples ("" is the module's own docstring)
ENTRY_POINTS = {
    "worldflux_gym": [""],
    "worldflux_gym.core.registry": ["create_world_model"],
    "worldflux_gym.core.model": ["WorldModel.from_pretrained"],
    "worldflux_gym.training": [""],
    "worldflux_gym.dream.dream_env": ["DreamEnv"],
    "worldflux_gym.dream.vector_env": ["DreamVectorEnv"],
    "worldflux_gym.dream.registration": ["make_sb3_vec_env"],
    "worldflux_gym.agents.train": ["train_agent"],
    "worldflux_gym.agents.evaluate": ["evaluate_agent"],
    "worldflux_gym.video.record": ["record_dream"],
    "worldflux_gym.audit.audit": ["audit_agent"],
    "worldflux_gym.audit.ranking": ["rank_agents"],
}
CASES = [(module, name) for module, names in ENTRY_POINTS.items() for name in names]


def _docstring_test(module_name: str, name: str) -> doctest.DocTest:
    module = importlib.import_module(module_name)
    obj = module
    for part in filter(None, name.split(".")):
        obj = getattr(obj, part)
    docstring = obj.__doc__ or ""
    parser = doctest.DocTestParser()
    title = f"{module_name}.{name}" if name else module_name
    return parser.get_doctest(docstring, dict(vars(module)), title, module.__file__, 0)


@pytest.mark.parametrize(("module_name", "name"), CASES, ids=[f"{m}:{n}" if n else m for m, n in CASES])
def test_the_docstring_example_runs(module_name, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    test = _docstring_test(module_name, name)
    assert test.examples, f"{test.name} has no example"
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=out.append)
    assert result.failed == 0, "".join(out)
