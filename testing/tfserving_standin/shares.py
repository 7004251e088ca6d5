"""A count of owners that can be awaited to zero: what a C++ shared_ptr's use count does for
the objects TF Serving keeps alive while a ServableHandle holds them (the loaded servable in
BasicManager, the published serving map in FastReadDynamicPtr)."""

from __future__ import annotations

import threading


class Shares:
    def __init__(self) -> None:
        self._count = 0
        self._cv = threading.Condition()

    def take(self) -> None:
        with self._cv:
            self._count += 1

    def drop(self) -> None:
        with self._cv:
            self._count -= 1
            self._cv.notify_all()

    def wait_none(self) -> None:
        """Until the last owner has dropped its share."""
        with self._cv:
            self._cv.wait_for(lambda: self._count == 0)
