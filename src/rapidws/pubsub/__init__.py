"""Topics (rooms) and encode-once broadcast: :class:`Hub`, over a :class:`Broker`.

``rapidws.Hub()`` serves one process; a broker carries topics, history and
presence between processes.
"""

from .broker import Broker, Envelope, History, MemoryBroker, Position
from .hub import Hub, SlowPolicy, Subscription, TopicOptions, TopicStats

__all__ = [
    "Broker",
    "Envelope",
    "History",
    "Hub",
    "MemoryBroker",
    "Position",
    "SlowPolicy",
    "Subscription",
    "TopicOptions",
    "TopicStats",
]
