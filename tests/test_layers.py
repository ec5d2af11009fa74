"""The import layers of lad: the lower layers never import the upper ones, lazily or not.

    lad.chat, lad.storage, lad.sandbox          below everything
    lad.data, lad.rewards, lad.rollout          read, score and sample; never train or evaluate
    lad.evaluation                              may use the above; never the trainers
    lad.train                                   on top (with lad.pipeline above it)
"""

import ast
from pathlib import Path

import pytest

LAD = Path(__file__).resolve().parents[1] / "lad"

# package (or module) -> the packages it must not import
FORBIDDEN = {
    "chat": ("lad",),
    "rollout": ("lad.train", "lad.evaluation", "lad.pipeline", "lad.data"),
    "data": ("lad.train", "lad.evaluation", "lad.pipeline", "lad.rollout"),
    "rewards": ("lad.train", "lad.evaluation", "lad.pipeline", "lad.rollout", "lad.data"),
    "evaluation": ("lad.train", "lad.pipeline"),
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_lower_layers_import_no_upper_layer(part):
    files = sorted((LAD / part).rglob("*.py")) if (LAD / part).is_dir() else [LAD / f"{part}.py"]
    assert files
    bad = [f"{f.relative_to(LAD.parent)} imports {m}" for f in files for m in sorted(imported_modules(f))
           if any(m == up or m.startswith(up + ".") for up in FORBIDDEN[part])]
    assert bad == []
