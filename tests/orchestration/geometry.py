"""Plane geometry for the DAG drawing's tests: does an edge pass through a step's box?"""


def segment_enters(a, b, box) -> bool:
    """Whether the segment a-b passes through the inside of box (left, top, right, bottom):
    the part of the segment inside it (Liang-Barsky clipping) has positive length."""
    (x1, y1), (x2, y2) = a, b
    left, top, right, bottom = box
    dx, dy = x2 - x1, y2 - y1
    low, high = 0.0, 1.0
    for p, q in ((-dx, x1 - left), (dx, right - x1), (-dy, y1 - top), (dy, bottom - y1)):
        if p == 0:
            if q <= 0:  # parallel to this side and outside (or on) it
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low >= high:
            return False
    return (high - low) * (dx * dx + dy * dy) ** 0.5 > 1e-6


def edges_through_boxes(boxes, polylines, inset=2.0):
    """(polyline, box) pairs where an edge passes through a box; a box is (x, y, w, h), a
    polyline a list of points. An edge's ends lie on its own boxes' borders: the inset keeps
    touching from counting."""
    found = []
    for path in polylines:
        for a, b in zip(path, path[1:]):
            for x, y, w, h in boxes:
                if segment_enters(a, b, (x + inset, y + inset, x + w - inset, y + h - inset)):
                    found.append((path, (x, y)))
    return found
