"""kombu's Redis transport, made to lose nothing when a worker or the broker dies.

kombu takes a message off the queue with BRPOP and only then, in a second command,
files it under "unacked", from which a lost one is handed out again. A worker killed
between the two, or a broker killed after the first (its append-only file keeps the
pop) before the second, loses the message: `make chaos` lost 19 batches to one broker
kill and one to a worker kill. Here the fetch is BLMOVE into a list of this channel's
own ("processing"), so the message is on the server in some list at every moment: the
filing under "unacked" takes it out of the processing list in the same transaction,
and a channel that stops renewing its heartbeat key has its processing list put back on
the queue by any worker's periodic sweep. RabbitMQ has real acknowledgements and needs
none of this.

It applies where a channel consumes one queue with one priority step (settings.py sets
`priority_steps: [0]`; Celery's workers here consume only `celery`); a channel
consuming several queues fetches with kombu's BRPOP, as before."""

import logging
from queue import Empty
from time import monotonic, time
from uuid import uuid4

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

log = logging.getLogger("cognitude.broker")

# Key names beside kombu's own "unacked", "unacked_index" and "unacked_mutex".
_PROCESSING = "unacked_processing"  # hash: processing list -> the queue it came from

# Put a dead channel's processing list back on its queue, unless its heartbeat is alive;
# oldest first out again (BLMOVE pushed each new message on the left).
_RESTORE_PROCESSING = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[4], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('HDEL', KEYS[3], KEYS[1])
return moved
"""


def _heartbeat_key(processing_key: str) -> str:
    return processing_key + ":alive"


class _QoS(kombu_redis.QoS):
    def append(self, message, delivery_tag) -> None:
        moved = self.channel.take_moved()
        if moved is None:
            return super().append(message, delivery_tag)
        processing_key, raw = moved
        delivery = message.delivery_info
        entry = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        try:
            with self.pipe_or_acquire() as pipe:
                # One transaction: the message leaves the processing list only as it lands
                # under "unacked".
                pipe.zadd(self.unacked_index_key, {delivery_tag: time()}) \
                    .hset(self.unacked_key, delivery_tag, entry) \
                    .lrem(processing_key, 1, raw) \
                    .execute()
        except BaseException:
            # Still in the processing list, or already filed: a new list from here on,
            # and the old one goes back to the queue once its heartbeat lapses.
            self.channel.start_processing_list()
            raise
        virtual.QoS.append(self, message, delivery_tag)

    def restore_visible(self, start=0, num=10, interval=10) -> None:
        # The worker's periodic sweep (every unacked_restore_interval): this channel's
        # heartbeat too, since a channel that may not consume (prefetch full) sends no
        # fetch to renew it.
        self.channel.beat()
        super().restore_visible(start=start, num=num, interval=interval)
        if (self._vrestore_count - 1) % (interval or 1):
            return
        self.channel.restore_dead_processing_lists()


class Channel(kombu_redis.Channel):
    QoS = _QoS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("cognitude's Redis broker transport does not support "
                             "global_keyprefix; use a database number of its own")
        self._processing_key = ""
        self._processing_source = ""  # the queue's list it fetches from
        self._heartbeat_due = 0.0
        self._sent: tuple[str, str] | None = None  # a BLMOVE awaiting its reply: list, queue
        self._moved: tuple[str, bytes] | None = None  # fetched, not yet filed
        self._restore_script = None
        self.start_processing_list()

    def _connparams(self, asynchronous: bool = False) -> dict:
        # A channel of a connection Celery has already let go: a lost connection, which
        # Celery and kombu know how to handle (RedisTransport says why).
        if self.connection.client is None:
            raise kombu_redis.get_redis_ConnectionError()("the broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)

    @property
    def _heartbeat_seconds(self) -> float:
        # A channel is alive while its worker's event loop runs; a task on the solo pool
        # holds that loop, but never longer than a message may stay unacknowledged.
        return max(float(self.visibility_timeout), 10.0)

    def start_processing_list(self) -> None:
        """Fetch into a new list from the next message on. The previous one, if a
        message may be left in it, is restored by a sweep once its heartbeat lapses."""
        self._processing_key = f"{_PROCESSING}:{uuid4().hex}"
        self._heartbeat_due = 0.0

    def take_moved(self) -> tuple[str, bytes] | None:
        moved, self._moved = self._moved, None
        return moved

    def _fetches_by_move(self) -> bool:
        return bool(self.ack_emulation and len(self.active_queues) == 1
                    and len(self.priority_steps) == 1)

    def beat(self) -> None:
        """Say this channel's processing list is alive, and which queue it came from."""
        if not self._processing_source:
            return
        with self.conn_or_acquire() as client:
            client.pipeline(transaction=False) \
                .hset(_PROCESSING, self._processing_key, self._processing_source) \
                .set(_heartbeat_key(self._processing_key), 1,
                     ex=int(self._heartbeat_seconds)) \
                .execute()
        self._heartbeat_due = monotonic() + self.unacked_restore_interval

    def _brpop_start(self, timeout=None):
        if self._sent is not None:
            # The last fetch's reply never came (a dropped or half-open connection): its
            # message may sit in that list.
            self.start_processing_list()
            self._sent = None
        if not self._fetches_by_move():
            return super()._brpop_start(timeout)
        if timeout is None:
            timeout = self.brpop_timeout
        (queue,) = self.active_queues
        source = self._q_for_pri(queue, self.priority_steps[0])
        if source != self._processing_source:
            self._processing_source = source
            self._heartbeat_due = 0.0
        if monotonic() >= self._heartbeat_due:
            self.beat()
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self._sent = (self._processing_key, queue)
        self.client.connection.send_command(
            "BLMOVE", source, self._processing_key, "RIGHT", "LEFT", timeout or 0)

    def _brpop_read(self, **options):
        if self._sent is None:
            return super()._brpop_read(**options)
        processing_key, queue = self._sent
        try:
            try:
                raw = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            self._sent = None
            if not raw:
                raise Empty()
            self._moved = (processing_key, raw)
            try:
                self.connection._deliver(loads(bytes_to_str(raw)), queue)
            except BaseException:
                if self.take_moved() is not None:
                    self.start_processing_list()
                raise
            if self.take_moved() is not None:
                # Consumed without acknowledgement (no_ack): nothing to keep.
                with self.conn_or_acquire() as client:
                    client.lrem(processing_key, 1, raw)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _poll_error(self, type, **options):
        if type == "BRPOP" and self._sent is not None:
            self.start_processing_list()
            self._sent = None
            return self.client.parse_response(self.client.connection, "BLMOVE")
        return super()._poll_error(type, **options)

    def restore_dead_processing_lists(self) -> None:
        with self.conn_or_acquire() as client:
            if self._restore_script is None:
                self._restore_script = client.register_script(_RESTORE_PROCESSING)
            for key, queue in client.hgetall(_PROCESSING).items():
                key, queue = bytes_to_str(key), bytes_to_str(queue)
                moved = self._restore_script(
                    keys=[key, _heartbeat_key(key), _PROCESSING, queue], client=client)
                if moved > 0:
                    log.warning("broker: %d message(s) a lost consumer had fetched were "
                                "put back on %s", moved, queue)


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport, with the channel above: nothing lost between fetch and
    acknowledgement, and a channel of a connection already let go is a lost connection.

    When the broker drops, Celery 5.7 collects the connection and then closes it; kombu
    5.7's Redis channel, asked on that close (or by a task finishing meanwhile) to
    acknowledge or restore messages, reaches for the transport's client, which the
    collect set to None: AttributeError, which Celery takes for an unrecoverable error,
    and the worker exits. A connection error instead is what both know how to handle:
    the acknowledgement is logged as lost, the consumer reconnects, and Redis keeps
    the unacknowledged message until the visibility timeout hands it out again."""

    Channel = Channel
