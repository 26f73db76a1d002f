"""The package's architecture as tests: imports run one way (no cycle between modules, counting
imports inside functions too), and pipeline families never import the registry."""

import ast
from pathlib import Path

import nested_diffusion

ROOT = Path(nested_diffusion.__file__).resolve().parent
PACKAGE = "nested_diffusion"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules imported anywhere in a module (function-local imports included). ``from X import
    y`` counts as importing the submodule ``X.y`` when it exists, else ``X``; the implicit import of a
    parent package (``X`` when importing ``X.y``) is Python's package machinery, not an edge."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle_through_a_function_local_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from .pipelines import pipeline\n")
    known = {"nested_diffusion.pipelines", "nested_diffusion.pipelines.pipeline", "nested_diffusion.m"}
    assert imports_of("nested_diffusion.m", source, known) == {"nested_diffusion.pipelines.pipeline"}


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and "nested_diffusion.pipelines.pipeline" in graph
    assert cycles(graph) == []


def test_pipeline_families_import_only_the_adapter_module():
    graph = import_graph()
    families = ["unet2d", "latent", "stable_diffusion", "dit"]
    for family in families:
        inside = {m for m in graph[f"nested_diffusion.pipelines.{family}"] if m.startswith("nested_diffusion.pipelines")}
        assert inside <= {"nested_diffusion.pipelines.adapter", "nested_diffusion.pipelines.latent"}, (family, inside)
    registry = graph["nested_diffusion.pipelines.pipeline"]
    assert {f"nested_diffusion.pipelines.{f}" for f in ("unet2d", "stable_diffusion", "dit")} <= registry


#: The package's layers, bottom to top: a module may import its own layer and those below, never
#: above — in particular nothing outside cli/ (and the ``python -m`` entry point) imports cli/.
LAYERS = [
    {"defaults", "schedules", "samplers", "denoiser", "session", "planner", "nested", "vanilla", "metrics", "data",
     "visualize", "images"},                         # the model-agnostic core
    {"restoration", "testing", "models"},           # more algorithms, oracles, shipped models
    {"pipelines", "<package>"},                     # diffusers adapters; the package's public surface
    {"evaluation", "studio"},                       # applications of the library
    {"cli"},                                        # the command line
    {"__main__"},
]


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "<package>"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} belongs to no layer: add its top-level name to LAYERS")


def test_layers_run_one_way():
    graph = import_graph()
    upward = sorted((a, b) for a, bs in graph.items() for b in bs if layer_of(b) > layer_of(a))
    assert upward == [], upward


def test_the_layer_check_sees_an_import_up_to_cli(tmp_path):
    source = tmp_path / "replay.py"
    source.write_text("def run():\n    from ..cli.options import check_out\n")
    known = {"nested_diffusion.cli.options", "nested_diffusion.studio.replay"}
    edges = imports_of("nested_diffusion.studio.replay", source, known)
    assert edges == {"nested_diffusion.cli.options"}
    assert layer_of("nested_diffusion.cli.options") > layer_of("nested_diffusion.studio.replay")


def test_sampler_names_are_derived_from_the_registry():
    """CLI choices, the studio's contract and its health (the page's list) read samplers.SAMPLERS."""
    from nested_diffusion.cli.options import SAMPLERS as cli_choices
    from nested_diffusion.samplers import SAMPLERS
    from nested_diffusion.studio.schemas import sampler_names

    assert list(cli_choices) == list(SAMPLERS) == sampler_names() and "dpmpp-3m" in cli_choices
    for path in ROOT.rglob("*.py"):  # no module spells the list out again
        text = path.read_text()
        assert '"ddim", "ddpm", "dpmpp-2m"' not in text, path
    page = (ROOT / "studio" / "static" / "index.html").read_text()
    assert 'value="dpmpp-2m"' not in page  # the page fills its list from /v1/health


def test_adapters_declare_their_conditioning_and_nobody_guesses_from_family_names():
    from nested_diffusion.pipelines import ADAPTERS
    from nested_diffusion.pipelines.adapter import Conditioning

    for adapter in ADAPTERS:  # class attribute or set in __init__ from the loaded pipeline
        source = Path(__import__(adapter.__module__, fromlist=["x"]).__file__).read_text()
        assert "Conditioning(" in source, adapter.family
    assert Conditioning("text", pooled=True, guidance="embedding").fields == ("prompt", "guidance_scale")
    assert Conditioning("text").fields == ("prompt", "negative_prompt", "guidance_scale")
    assert Conditioning("none", guidance="none").fields == ()
    for path in ROOT.rglob("*.py"):
        if "pipelines" not in path.parts:
            assert 'startswith("stable-diffusion")' not in path.read_text(), path
