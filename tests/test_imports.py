"""The package's modules import one another one way: no import circle."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def module_imports():
    """{module: the package's modules it imports}, tuning/ named as it is installed (mnistcompare.tuning)."""
    files = {}
    for folder, package in (("mnistcompare", "mnistcompare"), ("tuning", "mnistcompare.tuning")):
        for path in (ROOT / folder).glob("*.py"):
            if path.name != "__init__.py":
                files[f"{package}.{path.stem}"] = path
    edges = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        edges[name] = {m for m in found if m in files and m != name}
    return edges


def test_no_import_circle():
    edges, done, circles = module_imports(), set(), []

    def visit(module, path):
        if module in path:
            circles.append(path[path.index(module):] + [module])
            return
        if module in done:
            return
        for other in sorted(edges[module]):
            visit(other, path + [module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    assert len(edges) > 10 and not circles, circles
