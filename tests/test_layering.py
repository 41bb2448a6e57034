"""The house rules of hpr/, read from the source (ast, nothing imported): imports point down the layer
table and never up, no import cycles, CuPy only behind the device seam, the environment read only by
hpr.config and the programs, lazy imports say why, no private names reached across packages, and no
module over 600 lines or function over 100. Each rule is one parametrised case, so a report names the
rule that broke; each failure names the file, the line and the rule. The planted-violation tests show
that every rule can fail.

The layer table (docs/architecture.md draws it), bottom to top; an import may point down, or sideways
within the same rank, never up:

  0 floor     hpr.errors hpr.config hpr.trace hpr.device hpr.cpu hpr.faults
  1 kernels   hpr.kernels (and the compiled hpr._kernels: see below)
  2           hpr.comm hpr.nn hpr.data            (nn never imports comm; comm never imports nn)
  3           hpr.parallel hpr.quantum
  4           hpr.model
  5           hpr.optim hpr.checkpoint hpr.convert
  6 programs  hpr.train hpr.classify hpr.generate hpr.plan hpr.quantum.__main__ hpr.data.__main__
  7           hpr.bench hpr.__main__

``hpr`` itself (hpr/__init__.py, the public face) imports only the floor and hpr.comm; it sits just
above hpr.comm, so ``import hpr`` is an import from rank 3 or higher. Nothing imports a ``__main__``
module (an entry point): what others need lives in its package (hpr.bench.BENCHES).

The compiled extension hpr._kernels imports nothing of hpr (a leaf). hpr.cpu, on the floor, is the one
module that loads it (``cpu_kernels()``, which the kernel faces call), so the test places it on the
floor beside its loader, and the private-name rule keeps every other module from importing it.

Usage: ``cd tests && python -m pytest -q test_layering.py``"""
import ast
import os
import re
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYERS = {
    0: ("hpr.errors", "hpr.config", "hpr.trace", "hpr.device", "hpr.cpu", "hpr.faults", "hpr._kernels"),
    1: ("hpr.kernels",),
    2: ("hpr.comm", "hpr.nn", "hpr.data"),
    3: ("hpr.parallel", "hpr.quantum"),
    4: ("hpr.model",),
    5: ("hpr.optim", "hpr.checkpoint", "hpr.convert"),
    6: ("hpr.train", "hpr.classify", "hpr.generate", "hpr.plan", "hpr.quantum.__main__", "hpr.data.__main__"),
    7: ("hpr.bench", "hpr.__main__"),
}
FACE = "hpr"  # the package face (hpr/__init__.py)
FACE_RANK = 2.5  # above hpr.comm (which it imports), below everything that may `import hpr`
FACE_MAY_IMPORT = LAYERS[0] + ("hpr.comm",)
NEVER = {("hpr.nn", "hpr.comm"), ("hpr.comm", "hpr.nn")}  # sideways imports ruled out within a rank
COMPILED = {"hpr._kernels": "hpr.cpu"}  # modules with no .py source, and the one module that loads each
CUPY_HOMES = ("hpr/device.py", "hpr/kernels/gpu.py")
ENV_READERS = ("hpr.config",)  # beside every module at rank 6 and 7 (programs, benchmarks)
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
LAZY = re.compile(r"#\s*lazy:\s*\S")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 600, 100
RULES = ("upward", "cycle", "cupy", "environ", "lazy", "private", "size")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    rule: str
    what: str

    def __str__(self):
        return f"{self.path}:{self.line}: [{self.rule}] {self.what}"


@dataclass(frozen=True)
class Import:
    target: str  # the hpr module it loads (or the outside module's name)
    line: int
    end: int
    lazy: bool  # inside a function
    names: tuple = ()  # the names taken by `from x import a, b` when they are not modules
    binds: tuple = ()  # local names bound to hpr modules: (name, module)


# ---------------------------------------------------------------- reading the tree

def module_name(path):
    """hpr/parallel/data.py -> hpr.parallel.data; hpr/comm/__init__.py -> hpr.comm."""
    parts = path[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_tree(root=ROOT):
    """{path relative to root: source} of every module under hpr/."""
    out = {}
    for d, dirs, files in os.walk(os.path.join(root, "hpr")):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                full = os.path.join(d, f)
                with open(full, encoding="utf-8") as fh:
                    out[os.path.relpath(full, root).replace(os.sep, "/")] = fh.read()
    return out


def rank(module):
    """The layer of an hpr module: its longest prefix in LAYERS; None when it is not in the table."""
    if module == FACE:
        return FACE_RANK
    best = None
    for r, names in LAYERS.items():
        for n in names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > len(best[1])):
                best = (r, n)
    return best[0] if best else None


def group(module):
    """The table entry a module belongs to (hpr.comm.shm -> hpr.comm); the face is its own."""
    if module == FACE:
        return FACE
    best = ""
    for names in LAYERS.values():
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > len(best):
                best = n
    return best or module


def unit(module):
    """The package a module belongs to for the private-name rule: hpr.comm.shm -> hpr.comm; a module
    directly under hpr is its own unit (hpr.train); the face is "hpr"."""
    parts = module.split(".")
    return ".".join(parts[:2])


class Reader(ast.NodeVisitor):
    """One module's imports (with the depth of function nesting) and the names they bind."""

    def __init__(self, module, is_package, known):
        self.module, self.known = module, known
        self.package = module if is_package else module.rpartition(".")[0]
        self.depth = 0
        self.imports = []

    def visit_FunctionDef(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def _base(self, node):
        if not node.level:
            return node.module or ""
        parts = self.package.split(".")
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join(parts + ([node.module] if node.module else []))

    def visit_Import(self, node):
        for a in node.names:
            binds = ()
            if a.asname and a.name.startswith("hpr"):
                binds = ((a.asname, a.name),)
            elif a.name.startswith("hpr"):
                binds = (("hpr", FACE),)
            self.imports.append(Import(a.name, node.lineno, node.end_lineno, self.depth > 0, binds=binds))

    def visit_ImportFrom(self, node):
        base = self._base(node)
        plain = []
        for a in node.names:
            sub = f"{base}.{a.name}"
            if sub in self.known:  # `from hpr import trace`: the module hpr.trace
                self.imports.append(Import(sub, node.lineno, node.end_lineno, self.depth > 0,
                                           binds=((a.asname or a.name, sub),)))
            else:
                plain.append(a.name)
        if plain:
            self.imports.append(Import(base, node.lineno, node.end_lineno, self.depth > 0, names=tuple(plain)))


def parse_tree(sources):
    """{module: (path, tree, lines, imports)} for a {path: source} tree."""
    known = {module_name(p) for p in sources} | set(COMPILED)
    mods = {}
    for path, src in sources.items():
        tree = ast.parse(src, filename=path)
        name = module_name(path)
        r = Reader(name, path.endswith("__init__.py"), known)
        r.visit(tree)
        mods[name] = (path, tree, src.splitlines(), r.imports)
    return mods


def hpr_imports(imports):
    return [i for i in imports if i.target == FACE or i.target.startswith(FACE + ".")]


# ---------------------------------------------------------------- the rules

def check_upward(mods):
    out = []
    for name, (path, _, _, imports) in mods.items():
        mine = rank(name)
        if mine is None:
            out.append(Violation(path, 1, "upward", f"{name} is not in the layer table; add it to the table"))
            continue
        for i in hpr_imports(imports):
            theirs = rank(i.target)
            if i.target.endswith(".__main__") and i.target != name:
                out.append(Violation(path, i.line, "upward", f"imports the entry point {i.target}; what other "
                                     "modules need belongs in the package (its __init__ or a module)"))
                continue
            if i.target == name or group(i.target) == group(name) and name != FACE:
                continue
            if theirs is None:
                out.append(Violation(path, i.line, "upward", f"imports {i.target}, which is not in the layer table"))
            elif name == FACE and not any(i.target == n or i.target.startswith(n + ".") for n in FACE_MAY_IMPORT):
                out.append(Violation(path, i.line, "upward",
                                     f"the package face imports {i.target}; it may import only the floor and hpr.comm"))
            elif theirs > mine:
                out.append(Violation(path, i.line, "upward",
                                     f"{name} (layer {mine:g}) imports {i.target} (layer {theirs:g}), up the table"))
            elif (group(name), group(i.target)) in NEVER:
                out.append(Violation(path, i.line, "upward", f"{group(name)} never imports {group(i.target)}"))
    return out


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))
    return comps


def _path_back(graph, comp, start):
    """A shortest cycle through start inside one component: [start, ..., start] (breadth first)."""
    inside, prev, frontier = set(comp), {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return path[::-1] + [start]
                if w in inside and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")


def check_cycle(mods):
    graph = {m: set() for m in mods}
    where = {}  # (a, b) -> first line of a that imports b
    for name, (_, _, _, imports) in mods.items():
        for i in hpr_imports(imports):
            if i.target in mods and i.target != name:
                graph[name].add(i.target)
                where.setdefault((name, i.target), i.line)
    out = []
    for comp in _cycles(graph):
        start = comp[0]
        path = _path_back(graph, comp, start)
        steps = " -> ".join(f"{a} ({mods[a][0]}:{where[(a, b)]})" for a, b in zip(path, path[1:]))
        out.append(Violation(mods[start][0], where[(start, path[1])], "cycle",
                             f"import cycle: {steps} -> {start}; modules in the cycle: {', '.join(comp)}"))
    return out


def check_cupy(mods):
    out = []
    for name, (path, tree, _, imports) in mods.items():
        if path in CUPY_HOMES:
            continue
        for i in imports:
            if i.target.split(".")[0] in ("cupy", "cupyx"):
                out.append(Violation(path, i.line, "cupy", f"imports {i.target}; only {' and '.join(CUPY_HOMES)} "
                                     "may import CuPy (use hpr.device)"))
        for node in ast.walk(tree):  # importlib.import_module("cupy") / __import__("cupy")
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str) and node.args[0].value.split(".")[0] in ("cupy", "cupyx")
                    and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")):
                out.append(Violation(path, node.lineno, "cupy", f"imports {node.args[0].value} by name; only "
                                     f"{' and '.join(CUPY_HOMES)} may import CuPy"))
    return out


def check_environ(mods):
    out = []
    for name, (path, tree, _, _) in mods.items():
        if name in ENV_READERS or (rank(name) or 0) >= 6:
            continue
        for node in ast.walk(tree):
            hit = None
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                    and node.attr in ENV_NAMES:
                hit = f"os.{node.attr}"
            elif isinstance(node, ast.ImportFrom) and node.module == "os":
                hit = next((f"from os import {a.name}" for a in node.names if a.name in ENV_NAMES), None)
            if hit:
                out.append(Violation(path, node.lineno, "environ", f"{hit}: only hpr.config and the programs "
                                     "read the environment; take a setting from hpr.config.current()"))
    return out


def check_lazy(mods):
    out = []
    for name, (path, _, lines, imports) in mods.items():
        for i in imports:
            if i.lazy and not any(LAZY.search(lines[n - 1]) for n in range(i.line, i.end + 1)):
                out.append(Violation(path, i.line, "lazy", f"import of {i.target} inside a function without a "
                                     "`# lazy: <why>` comment on its line; import it at module level"))
    return out


def _private(n):
    return n.startswith("_") and not n.startswith("__")


def _defined_private(tree):
    """The private names a module defines: module globals, methods, class attributes, self._x = ..."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
            names.add(node.attr)
        elif isinstance(node, ast.Global):
            names.update(n for n in node.names if _private(n))
    return names


def check_private(mods):
    defined = {}  # unit -> private names defined there
    for name, (_, tree, _, _) in mods.items():
        defined.setdefault(unit(name), set()).update(_defined_private(tree))
    out = []
    for name, (path, tree, _, imports) in mods.items():
        here = unit(name)
        bound = {}  # local name -> hpr module of another unit
        for i in hpr_imports(imports):
            if unit(i.target) == here:
                continue
            for n in i.names:
                if _private(n):
                    out.append(Violation(path, i.line, "private", f"imports the private name {n} from {i.target}"))
            if any(_private(p) for p in i.target.split(".")) and COMPILED.get(i.target) != name:
                out.append(Violation(path, i.line, "private", f"imports the private module {i.target}"))
            bound.update(i.binds)
        others = set().union(*(v for u, v in defined.items() if u != here)) - defined.get(here, set())
        for node in ast.walk(tree):
            attr, obj = None, None
            if isinstance(node, ast.Attribute) and _private(node.attr):
                attr, obj = node.attr, node.value
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) >= 2
                  and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                  and _private(node.args[1].value)):
                attr, obj = node.args[1].value, node.args[0]
            if attr is None or (isinstance(obj, ast.Name) and obj.id in ("self", "cls")):
                continue
            owner = bound.get(obj.id) if isinstance(obj, ast.Name) else None
            if owner is not None and unit(owner) != here:
                out.append(Violation(path, node.lineno, "private", f"reaches into {owner}'s private {attr}"))
            elif owner is None and attr in others:
                whose = sorted(u for u, v in defined.items() if u != here and attr in v)
                out.append(Violation(path, node.lineno, "private",
                                     f"reads .{attr}, a private attribute of {', '.join(whose)}; use a public name"))
    return out


def check_size(mods):
    out = []
    for name, (path, tree, lines, _) in mods.items():
        if len(lines) > MAX_MODULE_LINES:
            out.append(Violation(path, MAX_MODULE_LINES + 1, "size",
                                 f"{len(lines)} lines, over {MAX_MODULE_LINES}; split it by concern"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(Violation(path, node.lineno, "size",
                                         f"function {node.name} is {n} lines, over {MAX_FUNCTION_LINES}"))
    return out


CHECKS = {"upward": check_upward, "cycle": check_cycle, "cupy": check_cupy, "environ": check_environ,
          "lazy": check_lazy, "private": check_private, "size": check_size}


def check(sources, rule):
    return sorted(CHECKS[rule](parse_tree(sources)), key=lambda v: (v.path, v.line))


# ---------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def tree():
    return read_tree()


@pytest.mark.parametrize("rule", RULES)
def test_hpr_keeps_the_rule(tree, rule):
    assert "hpr/__init__.py" in tree and "hpr/comm/__init__.py" in tree
    found = check(tree, rule)
    if found:
        pytest.fail(f"{len(found)} break(s) of the {rule!r} rule:\n" + "\n".join(map(str, found)), pytrace=False)


# a small clean tree, and for each rule one planted line that must break it
CLEAN = {
    "hpr/__init__.py": "from . import errors, trace\nfrom .comm import Communicator\n",
    "hpr/errors.py": "class HprError(Exception):\n    pass\n",
    "hpr/trace.py": "from .errors import HprError\non = False\n",
    "hpr/config.py": "import os\nTIMEOUT = os.environ.get('HPR_TIMEOUT')\n",
    "hpr/device.py": "def cupy_status():\n    import cupy  # lazy: optional, heavy\n    return cupy\n",
    "hpr/comm/__init__.py": "from .communicator import Communicator\n",
    "hpr/comm/communicator.py": ("from .. import trace\n\n\nclass Communicator:\n    def __init__(self):\n"
                                 "        self._main = None\n"),
    "hpr/nn/__init__.py": "",
    "hpr/nn/params.py": "from ..errors import HprError\nfrom hpr import trace\n",
    "hpr/parallel/__init__.py": "",
    "hpr/parallel/data.py": "import hpr\nfrom ..nn import params\nfrom ..comm import Communicator\n",
    "hpr/train.py": "import os\nimport hpr\nfrom .parallel import data\nSEED = os.environ.get('SEED')\n",
}
PLANTED = {
    "upward": ("hpr/nn/params.py", "from hpr import train\n"),
    "cycle": ("hpr/trace.py", "from . import config\n"),  # with config importing trace below
    "cupy": ("hpr/nn/params.py", "import cupyx\n"),
    "environ": ("hpr/parallel/data.py", "import os\nX = os.getenv('HPR_X')\n"),
    "lazy": ("hpr/parallel/data.py", "def f():\n    import json\n    return json\n"),
    "private": ("hpr/train.py", "def size(c):\n    return c._main.size\n"),
    "size": ("hpr/nn/params.py", "def f():\n" + "    x = 1\n" * 100),
}


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_catches_a_planted_break(rule):
    assert check(CLEAN, rule) == []
    path, extra = PLANTED[rule]
    planted = dict(CLEAN)
    planted[path] = CLEAN[path] + extra
    if rule == "cycle":
        planted["hpr/config.py"] = CLEAN["hpr/config.py"] + "from .trace import on\n"
    found = check(planted, rule)
    assert found and all(v.rule == rule for v in found), found
    assert found[0].path in (path, "hpr/config.py") and found[0].line >= 1
    assert str(found[0]).startswith(f"{found[0].path}:{found[0].line}: [{rule}]")


def test_more_breaks_each_rule_sees():
    """The forms the rules must also see: a relative import up (`from ..model import gpt`), nn importing
    comm sideways, the face importing above comm, a private name imported across packages, a
    function-level cycle, a function over 100 lines, a module over 600."""
    def found(path, extra, rule):
        planted = dict(CLEAN)
        planted[path] = planted.get(path, "") + extra
        return [str(v) for v in check(planted, rule)]

    assert found("hpr/nn/params.py", "from ..parallel import data\n", "upward")
    assert found("hpr/nn/params.py", "from ..comm import communicator\n", "upward")
    assert found("hpr/__init__.py", "from . import train\n", "upward")
    assert found("hpr/nn/extra.py", "x = 1\n", "upward") == []  # hpr.nn.* is placed by its package
    assert found("hpr/tokenizer.py", "x = 1\n", "upward")  # a module the table does not place
    assert found("hpr/bench/report.py", "from hpr.bench.__main__ import BENCHES\n", "upward")  # an entry point
    assert found("hpr/train.py", "from .comm.communicator import _spin\n", "private")
    assert found("hpr/train.py", "def n():\n    return hpr._world\n", "private")
    assert found("hpr/nn/params.py", "from .. import _kernels\n", "private")  # only hpr.cpu loads it
    assert found("hpr/comm/communicator.py", "def f(c):\n    return c._main\n", "private") == []  # its own
    assert found("hpr/comm/shm.py", "def f():\n    from .. import nn  # lazy: x\n", "upward")
    assert found("hpr/errors.py", "def f():\n    from . import trace  # lazy: test\n", "cycle")
    assert found("hpr/nn/params.py", "def f():\n    import cupy  # lazy: no\n", "cupy")
    assert found("hpr/nn/params.py", "from os import environ\n", "environ")
    assert found("hpr/nn/params.py", "def f():\n    from . import (\n        x)  # lazy: why\n", "lazy") == []
    assert found("hpr/nn/params.py", "x = 1\n" * 600, "size")
