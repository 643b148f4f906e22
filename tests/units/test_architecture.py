"""The layering of docs/design.md, checked on the source: who may import whom (importlib
included), no cycles, no module over 600 lines; the bench starts servers through the CLI and its
clients share their calls."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "workers", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module imported anywhere in the file (function-level imports included)."""
    tree = ast.parse(path.read_text(), str(path))
    package = (
        module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else (module_name(path))
    )
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # "from pkg import module" imports a module too.
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and _is_dynamic_import(node.func)
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    """``importlib.import_module(...)``, ``import_module(...)`` or ``__import__(...)``."""
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def string_constant(path: Path, name: str) -> tuple[str, ...]:
    """The strings of a module-level tuple constant, read from the source."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                assert isinstance(node.value, ast.Tuple), name
                return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no constant {name}")


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def our_imports() -> dict[str, set[str]]:
    modules = our_modules()
    return {
        name: {m for m in imports_of(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_protocol_core_imports_only_itself_stdlib_zstandard_msgpack() -> None:
    for name, path in our_modules().items():
        if not name.startswith("server.protocol"):
            continue
        for imported in imports_of(path):
            top = imported.split(".")[0]
            if top == "server":
                assert imported.startswith("server.protocol"), (name, imported)
            else:
                assert top in sys.stdlib_module_names or top in ("zstandard", "msgpack"), (
                    name,
                    imported,
                )


#: The one bench module that imports the worker (its core, commands and store, driven in the
#: bench's process by ``python -m bench.microbench``); the bench never starts a worker so.
WORKER_MICROBENCH = "bench.microbench_worker"


def test_layering() -> None:
    for name, imported in our_imports().items():
        for target in imported:
            if name.startswith("workers"):
                allowed = target.startswith(("workers", "server.protocol", "server.ipc")) or (
                    target in ("server", "server.logs")  # every process logs alike
                )
            elif name == WORKER_MICROBENCH:  # times the worker's steps in its own process
                allowed = target.startswith(("bench", "server.protocol", "server.ipc", "workers"))
                allowed = allowed and target != "workers.worker"  # no worker process, no loop
            elif name.startswith("bench"):
                allowed = target.startswith(("bench", "server.protocol")) or target == "server"
            elif name == "server.cli":
                allowed = True  # the composition root
            elif name.startswith("server.protocol"):
                allowed = target.startswith("server.protocol") or target == "server"
            elif name.startswith("server.ipc"):  # shared with the workers: sans I/O too
                allowed = target.startswith(("server.ipc", "server.protocol")) or (
                    target == "server"
                )
            else:  # the front
                allowed = target.startswith("server")
            assert allowed, f"{name} may not import {target}"


def test_shared_leaves_import_nothing_of_ours() -> None:
    """``server.logs`` (every process, the workers too) imports nothing of ours; the
    request meter (on every connection's hot path) and the metric families (pure: a
    snapshot in, families out) import only each other."""
    graph = our_imports()
    assert graph["server.logs"] == set()
    assert graph["server.request_meter"] == set()
    assert graph["server.metric_families"] <= {"server.request_meter"}


def test_no_import_cycles() -> None:
    graph = our_imports()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


#: The worker's sans-I/O core: no sockets, processes or clocks (the loop, workers.worker,
#: owns those and passes in what the core needs). Chunked bodies (workers.bodies) do no I/O
#: of their own either: their bytes come from the source they are given.
WORKER_CORE = ("workers.core", "workers.contexts", "workers.bodies")
NOT_IN_WORKER_CORE = ("zmq", "socket", "os", "time", "resource", "signal", "select", "asyncio")


def test_worker_core_is_sans_io() -> None:
    modules = our_modules()
    for name in WORKER_CORE:
        for imported in imports_of(modules[name]):
            assert imported.split(".")[0] not in NOT_IN_WORKER_CORE, (name, imported)
            assert imported != "workers.worker", (name, imported)


def test_subcommand_modules_imported_by_name_exist() -> None:
    """The CLI imports its subcommand modules through importlib, by name: a renamed module
    must be renamed there too."""
    names = string_constant(ROOT / "server" / "cli.py", "SUBCOMMAND_MODULES")
    assert names
    modules = our_modules()
    for name in names:
        assert name in modules, f"server.cli names a module that does not exist: {name}"


def test_bench_starts_servers_only_through_the_command_line() -> None:
    """The bench sees the server only as a process it starts with ``python -m server.cli
    serve`` (bench.server_process) or as an address; git is the only other command it runs."""
    for name, path in our_modules().items():
        if not name.startswith("bench"):
            continue
        imported = imports_of(path)
        assert "server.cli" not in imported, name
        if name != WORKER_MICROBENCH:  # the worker's core in-process, never a worker process
            assert not any(m.startswith("workers") for m in imported), name
        if "subprocess" in imported:
            assert name in ("bench.server_process", "bench.git_workload"), name
    source = (ROOT / "bench" / "server_process.py").read_text()
    for word in ('"server.cli"', '"serve"', '"--ready-file"'):
        assert word in source
    # --clients: the one other process the bench starts is its own client process.
    clients = (ROOT / "bench" / "client_processes.py").read_text()
    assert '"bench.load_process"' in clients and "server.cli" not in clients
    for name, path in our_modules().items():
        if name.startswith("bench") and name != "bench.client_processes":
            assert "create_subprocess" not in path.read_text(), name
    # Signals: the bench stops the server it started, and --chaos kills its processes.
    for name, path in our_modules().items():
        if name.startswith("bench") and name not in ("bench.server_process", "bench.chaos"):
            assert "os.kill(" not in path.read_text() and "SIGKILL" not in path.read_text(), name


def test_client_calls_do_no_io() -> None:
    """The calls both clients share, and their protocol state, touch no socket or event loop:
    only bench.sync_client and bench.async_client do I/O."""
    for name in ("bench.client_base", "bench.client_session", "bench.client_results"):
        imported = imports_of(our_modules()[name])
        assert not imported & {"asyncio", "socket", "selectors"}, name
    clients = {"bench.sync_client", "bench.async_client"}
    assert not any(c in our_imports()[other] for c in clients for other in clients - {c})


def test_no_module_over_600_lines() -> None:
    for name, path in our_modules().items():
        lines = len(path.read_text().splitlines())
        assert lines <= 600, f"{name} has {lines} lines"


def test_store_temp_files_module_is_a_leaf() -> None:
    """workers/store_temp.py (the temp-file rule shared by put and the sweep) imports nothing
    of ours, so the store and its sweep cannot drift apart through a third module."""
    assert our_imports()["workers.store_temp"] == set()


def test_store_directory_descriptors_module_is_a_leaf() -> None:
    """workers/store_dirs.py (how the store opens an object without following a symlink)
    imports nothing of ours."""
    assert our_imports()["workers.store_dirs"] == set()


def test_only_the_worker_microbench_imports_the_worker() -> None:
    importers = {
        name
        for name, imported in our_imports().items()
        if name.startswith("bench") and any(m.startswith("workers") for m in imported)
    }
    assert importers <= {WORKER_MICROBENCH}


def test_http_request_parsing_is_sans_io() -> None:
    """server/http_request.py parses bytes only: nothing of ours, no asyncio or sockets."""
    path = our_modules()["server.http_request"]
    assert our_imports()["server.http_request"] == set()
    assert not {"asyncio", "socket"} & {m.split(".")[0] for m in imports_of(path)}


def test_bench_judgements_do_no_io() -> None:
    """What the bench concludes from figures (thresholds, repeats, phase warnings, the corpus
    account) is arithmetic on results: no sockets, event loop, processes or server."""
    for name in ("bench.thresholds", "bench.repeats", "bench.phase_checks", "bench.compare"):
        imported = {m.split(".")[0] for m in imports_of(our_modules()[name])}
        assert not imported & {"asyncio", "socket", "selectors", "subprocess", "zmq"}, name
        assert not any(m.startswith(("bench.runner", "bench.main")) for m in our_imports()[name])
    assert our_imports()["bench.corpus_selection"] == set()


def test_micro_benchmarks_are_leaves() -> None:
    """``python -m bench.microbench`` (the core and the client's path) and ``python -m
    server.front_microbench`` (a front's path) are tools: nothing of ours imports them."""
    for name, imported in our_imports().items():
        assert not imported & {"bench.microbench", "server.front_microbench"}, name
