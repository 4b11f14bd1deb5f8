"""Live notifications: published after commit, delivered to the user's open sockets.

Each socket has a bounded queue; when a client falls that far behind, the oldest are
dropped (they stay readable at ``GET /api/v1/notifications``).
"""

import asyncio
from collections import deque
from collections.abc import Sequence

from parkspot.models import Notification
from parkspot.notifications.schemas import NotificationRead
from parkspot.realtime.bus import Bus, BusUnavailable


class NotificationQueue:
    __slots__ = ("items", "wake")

    def __init__(self, size: int) -> None:
        self.items: deque[bytes] = deque(maxlen=size)
        self.wake = asyncio.Event()

    def put(self, body: bytes) -> bool:
        """True when the queue was full and its oldest item was dropped."""
        full = len(self.items) == self.items.maxlen
        self.items.append(body)
        self.wake.set()
        return full

    def take(self) -> list[bytes]:
        items = list(self.items)
        self.items.clear()
        self.wake.clear()
        return items


class NotificationHub:
    def __init__(self, bus: Bus, queue_size: int) -> None:
        self._bus = bus
        self._queue_size = queue_size
        self._queues: dict[int, set[NotificationQueue]] = {}
        self._publishing: set[asyncio.Task[None]] = set()
        # Notifications dropped from full socket queues (for the metrics).
        self.dropped = 0

    def committed(self, notifications: Sequence[Notification]) -> None:
        """Called after a commit that created notifications."""
        items = [
            (n.user_id, NotificationRead.model_validate(n).model_dump_json().encode())
            for n in notifications
        ]
        task = asyncio.get_running_loop().create_task(self._publish(items))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, items: list[tuple[int, bytes]]) -> None:
        try:
            await self._bus.publish_notifications(items)
        except BusUnavailable:
            # This process's sockets still get them; the list endpoint has them all.
            for user_id, body in items:
                self.deliver(user_id, body)

    def deliver(self, user_id: int, body: bytes) -> None:
        for queue in self._queues.get(user_id, ()):
            if queue.put(body):
                self.dropped += 1

    def subscribe(self, user_id: int) -> NotificationQueue:
        queue = NotificationQueue(self._queue_size)
        self._queues.setdefault(user_id, set()).add(queue)
        return queue

    def unsubscribe(self, user_id: int, queue: NotificationQueue) -> None:
        queues = self._queues.get(user_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._queues[user_id]
