"""Twisted's two Perspective Broker examples, with Tether in place of the reactor.

The classes are Twisted's own (`copy_sender.py` / `copy_receiver.tac` and
`cache_classes.py`), in one module that both sides import, so that a class has the same
wire name (`pond.CopyPond`, `pond.MasterDuckPond`) everywhere.
"""

from __future__ import annotations

from tether import pb

# -- copies: LilyPond (copy_sender.py / copy_receiver.tac) ------------------------------


class LilyPond:
    def setStuff(self, color: str, numFrogs: int) -> None:
        self.color = color
        self.numFrogs = numFrogs

    def countFrogs(self) -> str:
        return f"{self.numFrogs} frogs"


class CopyPond(LilyPond, pb.Copyable):
    """What the sender sends: its state is its __dict__ (get_state_to_copy's default)."""


class ReceiverPond(pb.RemoteCopy, LilyPond):
    """What the receiver builds instead: made without __init__, filled with the state."""


pb.setUnjellyableForClass(CopyPond, ReceiverPond)  # the receiver's allow-list


# -- caches: the duck pond (cache_classes.py) -------------------------------------------


class MasterDuckPond(pb.Cacheable):
    """The pond itself, on the server: each connection it is sent over gets a mirror."""

    def __init__(self, ducks: list[str]) -> None:
        self.observers: list[pb.Observer] = []
        self.ducks = ducks

    def count(self) -> int:
        return len(self.ducks)

    def addDuck(self, duck: str) -> None:
        self.ducks.append(duck)
        for o in self.observers:
            o.callRemote("addDuck", duck)

    def removeDuck(self, duck: str) -> None:
        self.ducks.remove(duck)
        for o in self.observers:
            o.callRemote("removeDuck", duck)

    def getStateToCacheAndObserveFor(
        self, perspective: pb.Perspective, observer: pb.Observer
    ) -> list[str]:
        self.observers.append(observer)
        # you should ignore pb.Cacheable-specific state, like self.observers
        return self.ducks  # in this case, just a list of ducks

    def stoppedObserving(self, perspective: pb.Perspective, observer: pb.Observer) -> None:
        self.observers.remove(observer)


class SlaveDuckPond(pb.RemoteCache):
    """A client's mirror of the pond: built without __init__, updated by observe_*."""

    def count(self) -> int:
        return len(self.cacheducks)

    def getDucks(self) -> list[str]:
        return self.cacheducks

    def setCopyableState(self, state: list[str]) -> None:
        self.cacheducks = state

    def observe_addDuck(self, newDuck: str) -> None:
        self.cacheducks.append(newDuck)

    def observe_removeDuck(self, deadDuck: str) -> None:
        self.cacheducks.remove(deadDuck)


pb.setUnjellyableForClass(MasterDuckPond, SlaveDuckPond)
