"""The layers of the package: imports point down only (face > workers > concurrency > I/O > policy).

Pure policy (what to do: classifying outcomes, retry waits, schedules, URLs, what is
secret, config) never imports the modules that do I/O or run threads, so it stays testable
with ``now`` passed in; and no lower layer reaches up to the workers or the command line.
"""

import ast
import pathlib

import pytest

pytestmark = pytest.mark.transport_independent

ROOT = pathlib.Path(__file__).resolve().parent.parent / "syncworkers"

#: Layer of each module, bottom first; a package's modules share their package's entry unless named.
LAYERS = {
    "policy": ["version", "exceptions", "signals", "message", "signing", "redaction", "delivery", "polling",
               "observability",
               "config", "http.hosts", "http.headers", "http.outcome", "http.retry", "http.urls",
               "http.redirects", "http.breaker",
               "http.limits", "scheduling.schedule", "scheduling.jobs", "delivery.request", "delivery.endpoints",
               "delivery.checks",
               "polling.pagination", "polling.cursor", "polling.ratelimit", "polling.bodies", "polling.health",
               "outbox.health",
               "observability.redaction", "observability.metrics", "observability.events"],
    "io": ["http", "delivery.verdict", "observability.logging", "observability.tracing", "observability.prometheus",
           "observability.process_hooks", "prometheus", "delivery.attempt", "delivery.direct",
           "outbox", "sources", "polling.state", "polling.pages", "scheduling.coordination"],
    "concurrency": ["scheduling", "delivery.dispatch", "delivery.reporting", "delivery.broadcast",
                    "delivery.pool", "delivery.claims", "delivery.recorder", "delivery.producer", "delivery.launcher"],
    "workers": ["workers"],
    "face": ["__init__", "__main__", "cli", "contrib", "demo", "testing", "observability.ops_server"],
}
ORDER = list(LAYERS)


def layer_of(module: str) -> str:
    """The most specific entry naming *module* (``outbox.health`` before ``outbox``)."""
    best, length = None, -1
    for layer, names in LAYERS.items():
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > length:
                best, length = layer, len(name)
    if best is None:
        raise AssertionError(f"syncworkers.{module} is in no layer: add it to LAYERS")
    return best


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        name = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)
        yield name, package, path


def imports(package, path):
    """The syncworkers modules *path* imports, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[:len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] if node.module else [".".join(base + [a.name]) for a in node.names
                                                  if (ROOT.joinpath(*base, a.name)).exists()
                                                  or ROOT.joinpath(*base, a.name + ".py").exists()]
        elif node.module and node.module.startswith("syncworkers."):
            names = [node.module[len("syncworkers."):]]
        else:
            continue
        yield from (n for n in names if n)


@pytest.mark.parametrize("module, package, path", list(modules()), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_imports_point_down(module, package, path):
    mine = ORDER.index(layer_of(module))
    for target in imports(package, path):
        theirs = ORDER.index(layer_of(target))
        assert theirs <= mine, f"syncworkers.{module} ({ORDER[mine]}) imports syncworkers.{target} ({ORDER[theirs]})"


def test_policy_modules_do_no_io():
    io = ("socket", "sqlite3", "psycopg", "redis", "requests", "urllib3", "pycurl", "subprocess")
    for module, package, path in modules():
        if layer_of(module) != "policy":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert name.split(".")[0] not in io, f"syncworkers.{module} (pure policy) imports {name}"


#: Modules defining parts (module: its part classes): a class holds the parts it is built from, never inherits them.
PARTS = {"polling.pages": {"PageWalker"}, "scheduling.ticks": {"TickDriver"},
         "delivery.checks": {"InputChecks"}, "delivery.direct": {"DirectSender"}, "delivery.broadcast": {"Broadcaster"},
         "delivery.pool": {"DeliveryPool"}, "delivery.producer": {"OutboxProducer"}, "delivery.dispatch": {"Dispatcher"},
         "delivery.claims": {"Claims"}, "delivery.pacing": {"ClaimPace"}, "delivery.recorder": {"OutcomeRecorder"},
         "workers.relay": {"Relay"},
         "http.building": {"RequestBuilder"}, "http.attempts": {"Attempts"}, "http.submission": {"Submission"},
         "delivery.launcher": {"Launcher"}}
#: Modules whose classes still declare what a host class provides (mixins not yet made parts).
HOST_DECLARATIONS_LEFT: set = set()


def import_target(package, node):
    """The syncworkers module an ``ImportFrom`` node imports from (None for other packages)."""
    if node.level:
        return ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))
    if node.module and node.module.startswith("syncworkers."):
        return node.module[len("syncworkers."):]
    return None


def test_parts_are_held_not_inherited_and_their_internals_stay_inside():
    part_classes = set().union(*PARTS.values())
    for module, package, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(base).split(".")[-1] for base in node.bases}
                assert not bases & part_classes, f"syncworkers.{module}.{node.name} inherits a part: hold it instead"
            elif isinstance(node, ast.ImportFrom) and import_target(package, node) in PARTS:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"syncworkers.{module} imports {private}, internals of a part"


def host_declarations(path):
    """Classes whose body has an ``if TYPE_CHECKING:`` block: attributes borrowed from a host class."""
    return [node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)
            and any(isinstance(b, ast.If) and "TYPE_CHECKING" in ast.dump(b.test) for b in node.body)]


def test_no_class_declares_attributes_a_host_class_provides():
    found = {module: host_declarations(path) for module, package, path in modules()}
    for module, classes in found.items():
        if module not in HOST_DECLARATIONS_LEFT:
            assert not classes, f"syncworkers.{module}: {classes} declare what a host provides: build from parts"
    for module in HOST_DECLARATIONS_LEFT:  # the list only shrinks: a module made of parts leaves it
        assert found.get(module), f"syncworkers.{module} has no host declarations left: remove it from the list"


#: A named tuple's public methods, underscored only so as not to clash with its fields.
NAMEDTUPLE_API = ("_replace", "_asdict", "_fields", "_make")


def test_a_part_reads_no_private_attribute_of_another_object():
    """A part uses what it is given through its public surface (``self``'s own privates are its own)."""
    for module, package, path in modules():
        if module not in PARTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in NAMEDTUPLE_API):
                owner = node.value
                own = isinstance(owner, ast.Name) and owner.id in ("self", "cls") or (
                    isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super")
                assert own, f"syncworkers.{module} line {node.lineno} reads {ast.unparse(node)}"


#: "No class over ~300 lines": the longest left are public faces whose methods are mostly their
#: documented docstrings (WebhookSenderWorker) and the stores, one method per operation of the interface.
MAX_CLASS_LINES = 340


def test_no_class_grows_past_about_300_lines():
    for module, package, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1
                assert lines <= MAX_CLASS_LINES, f"syncworkers.{module}.{node.name} is {lines} lines: cut it into parts"
