"""The package's layout holds: no import cycle, no wing importing from a wing above it, the
workflow glue imported by nothing else, and every method's own hooks in its own module(s)."""
from lora_tsd.methods.hooks import Chain
from lora_tsd.methods.registry import METHODS
from lora_tsd.pipeline import codehash

# Bottom to top; a module may import from its own wing and the wings below it.
WINGS = ["leaves", "data", "models", "methods", "training", "evaluation", "aggregate", "pipeline"]
LEAVES = {"lora_tsd", "lora_tsd.atomic", "lora_tsd.kernels", "lora_tsd.lowrank", "lora_tsd.provenance", "lora_tsd.faults", "lora_tsd.tiny"}


def _modules() -> list[str]:
    names = [".".join((codehash.PACKAGE, *p.relative_to(codehash.ROOT).with_suffix("").parts))
             for p in codehash.ROOT.rglob("*.py") if "glue" not in p.parts and p.name != "make_data.py"]
    return sorted(n.removesuffix(".__init__") for n in names)


def _wing(module: str) -> int:
    if module in LEAVES:
        return 0
    return WINGS.index(module.split(".")[1])


def _imports(module: str) -> set[str]:
    return set(codehash._parsed(module)[1]) - {module}


def test_every_module_belongs_to_a_wing():
    assert all(_wing(m) >= 0 for m in _modules())
    assert len(_modules()) >= 40


def test_no_module_imports_from_a_wing_above_its_own():
    upward = [(m, i) for m in _modules() for i in _imports(m) if _wing(i) > _wing(m)]
    assert upward == []


def test_only_the_workflow_imports_the_pipeline():
    outside = [(m, i) for m in _modules() for i in _imports(m)
               if i.startswith("lora_tsd.pipeline") and not m.startswith("lora_tsd.pipeline")]
    assert outside == []


def test_the_import_graph_has_no_cycle():
    graph = {m: {i for i in _imports(m) if i in set(_modules())} for m in _modules()}
    done, active = set(), []

    def visit(m):
        assert m not in active, " -> ".join(active[active.index(m):] + [m])
        if m in done:
            return
        active.append(m)
        for n in graph[m]:
            visit(n)
        active.pop()
        done.add(m)

    for m in graph:
        visit(m)


def test_every_method_s_hooks_live_in_its_own_modules():
    for name, spec in METHODS.items():
        parts = spec.hooks.parts if isinstance(spec.hooks, Chain) else (spec.hooks,)
        for hooks in parts:
            home = type(hooks).__module__
            if home != "lora_tsd.methods.hooks":  # plain LoRA's (no) hooks, shared by all
                assert home in {f"lora_tsd.{m}" for m in spec.modules} | {"lora_tsd.methods.residual"}, (name, home)
    assert {m for m, s in METHODS.items() if s.switches} == {"lora_dash", "lora_tsd", "lora_dash_top", "lora_dash_bottom",
                                                             "lora_dash_random"}


def test_subpackage_faces_import_nothing():
    """A subpackage's __init__ stays empty, so importing one module never imports (or hashes) its siblings."""
    faces = [m for m in _modules() if (codehash.ROOT.parent / m.replace(".", "/") / "__init__.py").is_file()]
    assert faces and all(_imports(f) == set() for f in faces)
