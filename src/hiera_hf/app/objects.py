"""The objects of an image or a video being segmented (ids 1..255, their palette colours, and names), and the checks
of a click or a box a person gives (`sam2.prompts`' rules, with the app's messages)."""

from __future__ import annotations

from ..sam2.prompts import check_box, check_clicks, check_finite, check_index

MAX_OBJECT_ID = 255  # object ids are palette PNG values
MAX_NAME_LENGTH = 100
FOREGROUND, BACKGROUND = 1, 0


class Objects:
    """Named objects with ids 1..255 and the object being prompted. An object without a name given is called
    "object <id>" (`names` holds every object's name; `known_names` those given)."""

    def __init__(self):
        self.names: dict[int, str] = {}
        self.active: int | None = None

    def add(self, name: str | None = None) -> int:
        free = [i for i in range(1, MAX_OBJECT_ID + 1) if i not in self.names]
        if not free:
            raise ValueError(f"At most {MAX_OBJECT_ID} objects; remove one first")
        obj_id = free[0]
        self.names[obj_id] = f"object {obj_id}" if name is None else _name(name)
        self.active = obj_id
        return obj_id

    def check(self, obj_id: int | None) -> int:
        """`obj_id`, or the active object (one is created when there is none)."""
        if obj_id is None:
            return self.active if self.active is not None else self.add()
        obj_id = check_index(obj_id, "An object id", 1, MAX_OBJECT_ID)
        if obj_id not in self.names:
            raise ValueError(f"There is no object {obj_id}; objects: {sorted(self.names)}")
        return obj_id

    def select(self, obj_id: int) -> None:
        self.active = self.check(obj_id)

    def rename(self, obj_id: int, name: str) -> None:
        name = _name(name)
        self.names[self.check(obj_id)] = name

    def remove(self, obj_id: int) -> None:
        del self.names[self.check(obj_id)]
        if self.active == obj_id:
            self.active = max(self.names, default=None)

    def known_names(self) -> dict[int, str]:
        """The names that were given (the default "object <id>" says nothing), as exports write them."""
        return {obj_id: name for obj_id, name in self.names.items() if name != f"object {obj_id}"}


def _name(name) -> str:
    """A name a person gave, stripped; `ValueError` unless 1 to `MAX_NAME_LENGTH` characters."""
    name = str(name or "").strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"An object's name is 1 to {MAX_NAME_LENGTH} characters, got {len(name)}")
    return name


def numbers(values, count: int, what: str) -> list[float]:
    """`count` finite numbers (numbers or their text, as the page sends them); `ValueError` naming `what`."""
    array = check_finite(values, what)
    if array.shape != (count,):
        raise ValueError(f"{what} is {count} numbers, got {values!r}")
    return array.tolist()


def check_click(x: float, y: float, label: int, width: int, height: int) -> tuple[float, float, int]:
    """A click (x, y) in pixels of a `width` x `height` frame with its label (1 foreground, 0 background)."""
    x, y = numbers((x, y), 2, "A click")
    (label,) = check_clicks([(x, y)], [label], width, height)[1]
    return x, y, int(label)


def check_corners(box, width: int, height: int) -> list[float]:
    """Two opposite corners (x0, y0, x1, y1) in pixels, in any order -> (left, top, right, bottom)."""
    x0, y0, x1, y1 = numbers(box, 4, "A box")
    corners = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
    check_box(corners, width, height)
    return corners


__all__ = ["BACKGROUND", "FOREGROUND", "MAX_OBJECT_ID", "Objects", "check_click", "check_corners", "numbers"]
