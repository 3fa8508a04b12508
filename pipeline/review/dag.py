"""The pipeline's DAG as SVG: steps in columns by depth, arrows for dependencies, each box
coloured by its step's status (as Studio's graph view colours them). This module places the
boxes; ``templates/dag.html`` draws them."""
from typing import Dict, Iterable, List, Tuple

COLOURS = {"Succeeded": "#16a34a", "Failed": "#dc2626", "Executing": "#2563eb",
           "Starting": "#2563eb", "Stopping": "#d97706", "Stopped": "#d97706"}
NOT_RUN = "#9ca3af"
WIDTH, HEIGHT, GAP_X, GAP_Y = 170, 46, 50, 24


def layout(names: List[str], edges: Iterable[Tuple[str, str]]) -> Dict[str, Tuple[int, int]]:
    """(column, row) per step: a step's column is one more than its deepest dependency's."""
    parents: Dict[str, List[str]] = {n: [] for n in names}
    for source, target in edges:
        if source in parents and target in parents:
            parents[target].append(source)
    depth: Dict[str, int] = {}

    def depth_of(name, seen=()):
        if name not in depth:
            depth[name] = 1 + max((depth_of(p, seen + (name,)) for p in parents[name]
                                   if p not in seen), default=-1)
        return depth[name]

    rows: Dict[int, int] = {}
    place = {}
    for name in names:
        column = depth_of(name)
        place[name] = (column, rows.get(column, 0))
        rows[column] = rows.get(column, 0) + 1
    return place


def drawing(names: List[str], edges: List[Tuple[str, str]], statuses: Dict[str, str]) -> dict:
    """What ``templates/dag.html`` draws: the canvas, one box per step, one line per edge."""
    place = layout(names, edges)
    columns = 1 + max((c for c, _ in place.values()), default=0)
    rows = 1 + max((r for _, r in place.values()), default=0)

    def corner(name):
        column, row = place[name]
        return column * (WIDTH + GAP_X) + 4, row * (HEIGHT + GAP_Y) + 4

    lines = []
    for source, target in edges:
        if source in place and target in place:
            (x1, y1), (x2, y2) = corner(source), corner(target)
            lines.append({"x1": x1 + WIDTH, "y1": y1 + HEIGHT / 2, "x2": x2,
                          "y2": y2 + HEIGHT / 2})
    boxes = []
    for name in names:
        x, y = corner(name)
        status = statuses.get(name, "not run")
        boxes.append({"name": name, "status": status, "x": x, "y": y,
                      "colour": COLOURS.get(status, NOT_RUN)})
    return {"width": columns * (WIDTH + GAP_X), "height": rows * (HEIGHT + GAP_Y),
            "box_width": WIDTH, "box_height": HEIGHT, "lines": lines, "boxes": boxes}
