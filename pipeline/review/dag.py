"""The pipeline's DAG as SVG: steps in columns by depth, arrows for dependencies, each box
coloured by its step's status (as Studio's graph view colours them)."""
from html import escape
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


def svg(names: List[str], edges: List[Tuple[str, str]], statuses: Dict[str, str]) -> str:
    place = layout(names, edges)
    columns = 1 + max((c for c, _ in place.values()), default=0)
    rows = 1 + max((r for _, r in place.values()), default=0)
    width, height = columns * (WIDTH + GAP_X), rows * (HEIGHT + GAP_Y)

    def box(name):
        column, row = place[name]
        return column * (WIDTH + GAP_X) + 4, row * (HEIGHT + GAP_Y) + 4

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
             'font-size="12"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
             'markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z" '
             'fill="#555"/></marker></defs>']
    for source, target in edges:
        if source in place and target in place:
            (x1, y1), (x2, y2) = box(source), box(target)
            parts.append(f'<line x1="{x1 + WIDTH}" y1="{y1 + HEIGHT / 2}" x2="{x2}" '
                         f'y2="{y2 + HEIGHT / 2}" stroke="#555" marker-end="url(#arrow)"/>')
    for name in names:
        x, y = box(name)
        status = statuses.get(name, "not run")
        colour = COLOURS.get(status, NOT_RUN)
        parts.append(
            f'<g class="step" data-step="{escape(name)}" data-status="{escape(status)}">'
            f'<rect x="{x}" y="{y}" width="{WIDTH}" height="{HEIGHT}" rx="6" fill="{colour}" '
            f'fill-opacity="0.15" stroke="{colour}" stroke-width="2"/>'
            f'<text x="{x + 8}" y="{y + 19}" font-weight="bold">{escape(name[:24])}</text>'
            f'<text x="{x + 8}" y="{y + 36}" fill="{colour}">{escape(status)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
