"""The pipeline's DAG as SVG, drawn as Studio's graph view draws it: a layered (Sugiyama) layout
from grandalf, top to bottom, so long edges bend around the boxes instead of crossing them;
condition branches labelled true / false; each box coloured by its step's status. The layout
depends only on the definition (its steps and edges), never on a run's statuses, so every
execution of a pipeline is drawn the same. This module places; ``templates/dag.html`` draws.
"""
from typing import Any, Dict, List, Optional, Tuple

from grandalf.graphs import Edge, Vertex, graph_core
from grandalf.layouts import SugiyamaLayout

COLOURS = {"Succeeded": "#16a34a", "Failed": "#dc2626", "Executing": "#2563eb",
           "Starting": "#2563eb", "Stopping": "#d97706", "Stopped": "#d97706"}
NOT_RUN = "#9ca3af"
WIDTH, HEIGHT = 170, 46  # a step's box
X_SPACE, Y_SPACE = 40, 44  # between boxes of a layer; between layers (room for a label)
MARGIN, COMPONENT_GAP = 8, 40


class _Box:
    """What grandalf reads and writes for a vertex: its size, then its centre."""

    def __init__(self):
        self.w, self.h, self.xy = WIDTH, HEIGHT, (0.0, 0.0)


class _Route:
    """What grandalf writes for an edge: the centres it passes (its boxes', and a placeholder's
    in each layer it crosses), made a polyline that leaves the source box at its bottom, runs
    straight down through every layer it crosses (where grandalf kept its placeholder clear of
    the boxes), and enters the target box at its top. Slanted parts lie only between layers,
    where there are no boxes: no edge can pass through a box."""

    points: list = []

    def setpath(self, centres):
        (x0, y0), *middle, (x1, y1) = [tuple(p) for p in centres]
        half = HEIGHT / 2
        self.points = [(x0, y0 + half)] + [
            p for x, y in middle for p in ((x, y - half), (x, y + half))] + [(x1, y1 - half)]


Point = Tuple[float, float]


def layout(names: List[str], edges: List[Tuple[str, str]]) -> Tuple[
        Dict[str, Point], Dict[Tuple[str, str], List[Point]]]:
    """(centre of each step's box, the polyline of each edge), in canvas coordinates."""
    vertices = {name: Vertex(name) for name in names}
    for vertex in vertices.values():
        vertex.view = _Box()
    graph_edges = []
    for source, target in edges:
        if source in vertices and target in vertices:
            edge = Edge(vertices[source], vertices[target])
            edge.view = _Route()
            graph_edges.append(edge)
    offset = 0.0
    for component in _components(vertices, graph_edges):  # side by side, each on its own
        sugiyama = SugiyamaLayout(component)
        sugiyama.xspace, sugiyama.yspace = X_SPACE, Y_SPACE
        sugiyama.init_all(roots=[v for v in component.sV if not v.e_in()], optimize=True)
        sugiyama.draw()
        offset = _shift(component, offset) + COMPONENT_GAP
    centres = {name: vertex.view.xy for name, vertex in vertices.items()}
    routes = {(e.v[0].data, e.v[1].data): e.view.points for e in graph_edges}
    return centres, routes


def _components(vertices: Dict[str, Vertex], edges: List[Edge]) -> List[graph_core]:
    """The connected parts, vertices and edges in the definition's order. (grandalf's Graph
    gathers each part's edges in a set, whose order follows memory addresses: the layout would
    change from one drawing to the next.)"""
    part = {name: name for name in vertices}

    def root(name):
        while part[name] != name:
            name = part[name]
        return name

    for edge in edges:
        part[root(edge.v[0].data)] = root(edge.v[1].data)
    cores = []
    for key in dict.fromkeys(root(name) for name in vertices):
        members = [v for name, v in vertices.items() if root(name) == key]
        cores.append(graph_core(members, [e for e in edges if root(e.v[0].data) == key]))
    return cores


def _shift(component, offset: float) -> float:
    """Move a laid-out component right of ``offset`` and below the margin; its right edge."""
    boxes = [v.view for v in component.sV]
    bends = [p for e in component.sE for p in e.view.points]  # a bend may lie beyond the boxes
    left = min([b.xy[0] - b.w / 2 for b in boxes] + [x for x, _ in bends])
    top = min([b.xy[1] - b.h / 2 for b in boxes] + [y for _, y in bends])
    dx, dy = offset + MARGIN - left, MARGIN - top
    for box in boxes:
        box.xy = (box.xy[0] + dx, box.xy[1] + dy)
    for edge in component.sE:
        edge.view.points = [(x + dx, y + dy) for x, y in edge.view.points]
    return max([b.xy[0] + b.w / 2 for b in boxes] + [x + dx for x, _ in bends])


def drawing(names: List[str], edges: List[Tuple[str, str]], statuses: Dict[str, str],
            labels: Optional[Dict[Tuple[str, str], str]] = None,
            notes: Optional[Dict[str, str]] = None,
            hrefs: Optional[Dict[str, str]] = None) -> dict:
    """What ``templates/dag.html`` draws: the canvas, one box per step (its status, a note such
    as "cache hit", a link), one polyline per edge (a label on condition branches)."""
    labels, notes, hrefs = labels or {}, notes or {}, hrefs or {}
    centres, routes = layout(names, edges)
    boxes: List[Dict[str, Any]] = []
    for name in names:
        x, y = centres[name]
        status = statuses.get(name, "not run")
        boxes.append({"name": name, "status": status, "note": notes.get(name, ""),
                      "href": hrefs.get(name), "x": round(x - WIDTH / 2, 1),
                      "y": round(y - HEIGHT / 2, 1), "colour": COLOURS.get(status, NOT_RUN)})
    lines = []
    for edge, points in routes.items():
        (x1, y1), (x2, y2) = points[0], points[1]
        lines.append({"points": " ".join(f"{x:.1f},{y:.1f}" for x, y in points),
                      "label": labels.get(edge, ""), "label_x": round(x1 + (x2 - x1) * 0.3 + 4, 1),
                      "label_y": round(y1 + (y2 - y1) * 0.3, 1)})
    points = [p for route in routes.values() for p in route]
    width = max([b["x"] + WIDTH for b in boxes] + [x for x, _ in points], default=0) + MARGIN
    height = max([b["y"] + HEIGHT for b in boxes] + [y for _, y in points], default=0) + MARGIN
    return {"width": round(width), "height": round(height), "box_width": WIDTH,
            "box_height": HEIGHT, "lines": lines, "boxes": boxes}
