"""The repository's own import graph: no cycle, and every import points down the layers.

Layers, bottom up (README, "Code map"): compat/entity/cli (ground); protowire/weights_io (the
file formats the nets load through); models/; the shared library (root modules without a
``__main__`` block); the scripts; tests/support (imported as ``support``: helpers for tests,
bench/ and .ci/); bench/.  An import may stay in its layer or point down.
Imports are read from the source (top-level and inside functions alike: a deferred import
hides a cycle from Python, not from this test); ``importlib`` look-ups are not followed.
"""
import ast
import graphlib
import os

import pytest

from conftest import REPO

GROUND = {'compat', 'entity', 'cli'}
FORMATS = {'protowire', 'weights_io'}
# Root modules with a __main__ block that are libraries first: the COCO loader's main only
# draws samples, training, ignore masks, track_eval and benches import its loader.
LIBRARY_WITH_MAIN = {'coco_data_loader'}
LAYERS = ('ground', 'formats', 'models', 'library', 'script', 'support', 'bench')
DETECTOR_SCRIPTS = {'pose_detector', 'face_detector', 'hand_detector'}
SCANNED = ('', 'models', 'bench', 'tests/support')  # each a package named by its last part


def module_files(root, dirs=SCANNED):
    """``{module name: path}`` for every .py in ``dirs`` of ``root`` ('' is the root itself:
    ``x.py`` -> ``x``, ``models/x.py`` -> ``models.x``, ``models/__init__.py`` -> ``models``,
    ``tests/support/x.py`` -> ``support.x``: tests/ is on sys.path); a missing dir is skipped."""
    mods = {}
    for d in dirs:
        folder = os.path.join(root, d)
        if not os.path.isdir(folder):
            continue
        package = os.path.basename(d)
        for f in sorted(os.listdir(folder)):
            if f.endswith('.py'):
                name = f[:-3]
                if d:
                    name = package if name == '__init__' else package + '.' + name
                mods[name] = os.path.join(folder, f)
    return mods


def _resolve(name, importer, mods):
    """The repo module a bare/dotted ``name`` imported by ``importer`` is, or None (a third-
    party module).  Scripts in bench/ and models/ put the root first on sys.path, and a
    bench script may also import its siblings."""
    if name in mods:
        return name
    folder = importer.rpartition('.')[0]
    if folder and folder + '.' + name in mods:
        return folder + '.' + name
    return None


def imports_of(tree, importer, mods, is_package=False):
    """The repo modules ``tree`` imports anywhere in its body (a submodule import also
    imports its package, as Python runs the package's ``__init__`` first)."""
    deps = set()

    def add(name):
        while name:
            found = _resolve(name, importer, mods)
            if found:
                deps.add(found)
            name = name.rpartition('.')[0]

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:  # relative: the importer's package, one dot per level up
                package = importer if is_package else importer.rpartition('.')[0]
                for _ in range(node.level - 1):
                    package = package.rpartition('.')[0]
                base = '.'.join(p for p in (package, base) if p)
            add(base)
            for alias in node.names:  # ``from models import _fast`` imports a module
                found = _resolve(base + '.' + alias.name, importer, mods) if base else None
                if found:
                    deps.add(found)
    deps.discard(importer)
    return deps


def import_graph(root, dirs=SCANNED):
    """``{module: set of repo modules it imports}`` for the .py files in ``dirs`` of ``root``,
    and ``{module: parsed tree}``."""
    mods = module_files(root, dirs)
    trees = {}
    for name, path in mods.items():
        with open(path, encoding='utf-8') as f:
            trees[name] = ast.parse(f.read(), path)
    graph = {name: imports_of(trees[name], name, mods, path.endswith('__init__.py'))
             for name, path in mods.items()}
    return graph, trees


def find_cycle(graph):
    """One import cycle of ``graph`` as a list ``[a, b, ..., a]``, or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        return list(reversed(e.args[1]))  # graphlib lists it against the import direction
    return None


def has_main_block(tree):
    return any(isinstance(node, ast.If) and "'__main__'" in ast.unparse(node.test)
               for node in tree.body)


def layer_of(name, tree):
    """The layer index (in ``LAYERS``) of module ``name``."""
    if name in GROUND:
        return LAYERS.index('ground')
    if name in FORMATS:
        return LAYERS.index('formats')
    if name.startswith('bench.'):
        return LAYERS.index('bench')
    if name == 'support' or name.startswith('support.'):
        return LAYERS.index('support')
    if has_main_block(tree) and name not in LIBRARY_WITH_MAIN:
        return LAYERS.index('script')  # models/convert_model.py too: the original's entry
    if name == 'models' or name.startswith('models.'):
        return LAYERS.index('models')
    return LAYERS.index('library')


def upward_imports(graph, layers):
    """``(importer, imported)`` pairs where the imported module is in a higher layer."""
    return sorted((a, b) for a, deps in graph.items() for b in deps if layers[b] > layers[a])


def reachable(graph, start):
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


@pytest.fixture(scope='module')
def repo_graph():
    graph, trees = import_graph(REPO)
    return graph, {name: layer_of(name, tree) for name, tree in trees.items()}


# ----------------------------------------------------------------------------- the repository

def test_the_repository_has_no_import_cycle(repo_graph):
    graph, _ = repo_graph
    assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))


def test_every_import_points_down_the_layers(repo_graph):
    graph, layers = repo_graph
    bad = ['%s (%s) imports %s (%s)' % (a, LAYERS[layers[a]], b, LAYERS[layers[b]])
           for a, b in upward_imports(graph, layers)]
    assert not bad, '\n'.join(bad)


def test_ground_and_models_layers_are_what_the_readme_says(repo_graph):
    graph, layers = repo_graph
    for name in GROUND:
        assert graph[name] <= GROUND, (name, graph[name])
    models = [m for m in graph if m == 'models' or m.startswith('models.')]
    assert 'models.CocoPoseNet' in models and 'models._onnx' in models
    for m in models:
        if LAYERS[layers[m]] == 'models':
            outside = {d for d in graph[m] if not d.startswith('models')}
            assert outside <= GROUND | FORMATS, (m, outside)
    assert LAYERS[layers['models.convert_model']] == 'script'
    assert LAYERS[layers['pose_detector']] == 'script'
    assert LAYERS[layers['paf_grouping']] == 'library'
    assert LAYERS[layers['support.caffe_files']] == 'support'


def test_only_tests_bench_and_ci_import_the_test_support(repo_graph):
    """tests/support is scanned as a layer above the scripts (so the layer check catches a
    library module importing it); ``tests``/``conftest`` are not modules of the scan, so an
    import of those by name is checked here.  bench/ does import the support modules."""
    graph, _ = repo_graph
    _, trees = import_graph(REPO, ('', 'models'))
    for name, tree in trees.items():
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert n.split('.')[0] not in ('support', 'tests', 'conftest'), (name, n)
    assert {'support.caffe_files', 'support.cmu_nets'} <= graph['bench.run_all']
    assert 'support.tfgraph_fixed' in graph['bench.bench_mobilenet']


def test_the_onnx_exporter_and_backend_never_reach_a_detector(repo_graph):
    """The cycle that was: detector -> onnx_backend -> export_onnx -> (deferred) detector."""
    graph, _ = repo_graph
    for name in ('export_onnx', 'onnx_backend', 'models._onnx'):
        assert not reachable(graph, name) & DETECTOR_SCRIPTS, (name, reachable(graph, name))


def test_function_level_imports_are_edges(repo_graph):
    """Deferred imports count: pose_detector.load_model imports onnx_backend in its body,
    camera_face_demo its face_detector in main()."""
    graph, _ = repo_graph
    assert 'onnx_backend' in graph['pose_detector']
    assert 'face_detector' in graph['camera_face_demo']


def test_putting_the_old_cycle_back_is_found(repo_graph):
    graph, _ = repo_graph
    graph = {k: set(v) for k, v in graph.items()}
    graph['export_onnx'].add('pose_detector')
    assert find_cycle(graph) is None  # nothing imports export_onnx: not a cycle by itself
    graph['onnx_backend'].add('export_onnx')
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert {'pose_detector', 'onnx_backend', 'export_onnx'} <= set(cycle)


# ----------------------------------------------------------------------------- the functions

def test_find_cycle_on_tiny_graphs():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
    assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None  # a diamond
    cycle = find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}})
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ['a', 'b', 'c']
    for x, y in zip(cycle, cycle[1:]):  # each step is an import
        assert y in {'a': {'b'}, 'b': {'c'}, 'c': {'a'}}[x]
    assert find_cycle({'a': {'a'}}) == ['a', 'a']


def test_upward_imports_on_a_tiny_graph():
    layers = {'entity': 0, 'models.Net': 2, 'paf_grouping': 3, 'pose_detector': 4}
    ok = {'entity': set(), 'models.Net': {'entity'}, 'paf_grouping': {'models.Net'},
          'pose_detector': {'paf_grouping', 'entity'}}
    assert upward_imports(ok, layers) == []
    bad = dict(ok, **{'models.Net': {'entity', 'pose_detector'}})
    assert upward_imports(bad, layers) == [('models.Net', 'pose_detector')]


def test_a_deferred_cyclic_import_in_files_is_found(tmp_path):
    """Parsed from files like the repository: a cycle through a function-level import and a
    relative one in a package, a sibling import in bench/, third-party names ignored."""
    (tmp_path / 'models').mkdir()
    (tmp_path / 'bench').mkdir()
    (tmp_path / 'detector.py').write_text(
        'import numpy as np\nimport backend\n\nif __name__ == "__main__":\n    pass\n')
    (tmp_path / 'backend.py').write_text('from models import net\n')
    (tmp_path / 'models' / '__init__.py').write_text('import os\n')
    (tmp_path / 'models' / 'net.py').write_text(
        'from . import _kernels\n\ndef load():\n    from detector import x\n')
    (tmp_path / 'models' / '_kernels.py').write_text('')
    (tmp_path / 'bench' / 'b.py').write_text('import detector\nimport helper\n')
    (tmp_path / 'bench' / 'helper.py').write_text('import sys\n')
    graph, trees = import_graph(str(tmp_path))
    assert graph == {'detector': {'backend'}, 'backend': {'models', 'models.net'},
                     'models': set(), 'models.net': {'models', 'models._kernels', 'detector'},
                     'models._kernels': set(), 'bench.b': {'detector', 'bench.helper'},
                     'bench.helper': set()}
    cycle = find_cycle(graph)
    assert cycle is not None and {'detector', 'backend', 'models.net'} <= set(cycle)
    layers = {name: layer_of(name, tree) for name, tree in trees.items()}
    assert [LAYERS[layers[m]] for m in ('detector', 'backend', 'models.net', 'bench.b')] == \
        ['script', 'library', 'models', 'bench']
    assert upward_imports(graph, layers) == [('models.net', 'detector')]
    assert reachable(graph, 'backend') >= {'detector'}
    (tmp_path / 'models' / 'net.py').write_text('from . import _kernels\n')
    graph, _ = import_graph(str(tmp_path))
    assert find_cycle(graph) is None
