"""The house rules: the import graph of the package, and the settings defined once."""
import ast
import os
from dataclasses import fields
from typing import Dict, Set

import pytest
import torch
from conftest import REPO, tiny_vit_kwargs
from detectron2.config import get_cfg
from detectron2.model_zoo import get_config

from ailurus import AiluRusSettings, AiluRusViT, add_ailurus_config, use_ailurus
from ailurus.settings import SETTING_NAMES, settings_table

PACKAGE_ROOT = os.path.join(REPO, "projects")
EXPERIMENTS = "ailurus.experiments"


def _modules() -> Dict[str, str]:
    """{dotted module name: file} of every module of the package (a package is its __init__)."""
    found = {}
    for folder, _, files in os.walk(os.path.join(PACKAGE_ROOT, "ailurus")):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), PACKAGE_ROOT)[: -len(".py")].split(os.sep)
                found[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(folder, name)
    return found


MODULES = _modules()


def _imports(module: str, path: str):
    """(imported module, imported names, at module level) of every import statement in the file."""
    is_package = path.endswith("__init__.py")
    tree = ast.parse(open(path).read())
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parent = parts if is_package else parts[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            yield base, [a.name for a in node.names], id(node) in top_level


def _graph() -> Dict[str, Set[str]]:
    """Edges between the package's modules; ``from pkg import sub`` points at the submodule."""
    edges = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, names, _ in _imports(module, path):
            if target not in MODULES:
                continue
            subs = {f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES}
            edges[module] |= subs
            if not names or len(subs) < len(names):
                edges[module].add(target)
    return edges


def test_the_import_graph_has_no_cycle():
    edges, state, path = _graph(), {}, []

    def visit(m: str) -> None:
        state[m] = "open"
        path.append(m)
        for n in sorted(edges[m]):
            assert state.get(n) != "open", "import cycle: " + " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n)
        path.pop()
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


def test_no_import_runs_back_up_to_an_enclosing_package():
    for module, targets in _graph().items():
        for target in targets:
            assert not module.startswith(target + "."), f"{module} imports its enclosing package {target}"


def test_the_model_never_imports_the_experiments():
    for module, targets in _graph().items():
        if not module.startswith(EXPERIMENTS):
            assert not {t for t in targets if t.startswith(EXPERIMENTS)}, f"{module} imports the experiments"


def test_no_private_names_cross_modules_and_no_lazy_imports_of_the_package():
    for module, path in MODULES.items():
        for target, names, top_level in _imports(module, path):
            assert not [n for n in names if n.startswith("_")], f"{module} imports private {names} from {target}"
            if target.split(".")[0] == "ailurus":
                assert top_level, f"{module} imports {target} inside a function (an import cycle dodged?)"


def test_the_readme_settings_table_is_the_settings_definition():
    readme = open(os.path.join(REPO, "README.md")).read()
    assert settings_table() in readme


def test_every_config_route_carries_every_setting_with_its_default():
    defaults = {f.name: f.default for f in fields(AiluRusSettings)}
    model = get_config("common/models/mask_rcnn_vitdet.py").model
    use_ailurus(model, keep_ratio=0.25)
    assert {k: model.backbone.net[k] for k in SETTING_NAMES} == {**defaults, "keep_ratio": 0.25}
    cfg = get_cfg()
    add_ailurus_config(cfg)
    assert {k.lower(): v for k, v in cfg.MODEL.AILURUS.items()} == defaults
    net = AiluRusViT(**tiny_vit_kwargs())
    assert net.settings == AiluRusSettings() and net.keep_ratio == defaults["keep_ratio"]


def test_settings_set_as_attributes_are_validated_and_used():
    net = AiluRusViT(**tiny_vit_kwargs(), cluster_layer=2, knn_k=3, radius=1, assign_radius=2).eval()
    x = torch.randn(1, 3, 128, 128)
    net.keep_ratio = 0.25
    assert net.settings.keep_ratio == 0.25 and "keep_ratio" not in net.__dict__
    with torch.no_grad():
        assert net.forward_tokens(x)[0].shape[1] == 16  # ceil(0.25 * 64)
    with pytest.raises(ValueError, match="keep_ratio=1.5"):
        net.keep_ratio = 1.5
    assert net.keep_ratio == 0.25
    with pytest.raises(ValueError, match="cluster_layer=4 is invalid; it must be an integer in 1..3"):
        net.cluster_layer = 4


def test_unknown_settings_are_refused_like_unknown_vit_arguments():
    with pytest.raises(TypeError, match="keep_ration"):
        AiluRusViT(**tiny_vit_kwargs(), keep_ration=0.5)
