"""Partition state behind a small Protocol: a Redis store and its in-memory twin.

Each owner of a partition (a joiner or evaluator process) keeps the state of that partition
under one *scope* (``joiner:3``). Every key of a scope shares one Redis Cluster hash tag, so a
checkpoint is a single atomic Lua call that

1. checks the owner's **epoch** (fencing: a new owner increments it on claim, after which a
   zombie's writes fail with :class:`~streaming.errors.FencedError`), and
2. applies all hash/sorted-set changes and the metadata (offsets, watermarks, sequence) at once.

So state and the offsets it covers are never out of step, and a crash between two writes
leaves the previous checkpoint intact.

>>> store = InMemoryStateStore()
>>> epoch = store.claim("joiner:0")
>>> ops = Ops().hset("entries", "p1", b"x").meta("offset", "41")
>>> store.commit("joiner:0", epoch, 1, ops)
>>> store.hmget("joiner:0", "entries", ["p1", "p2"])
[b'x', None]
>>> store.meta("joiner:0")
{'generation': '1', 'offset': '41'}
>>> store.commit("joiner:0", epoch, 1, ops)  # a retried duplicate changes nothing
>>> store.claim("joiner:0") > epoch  # a new owner fences the old one
True
>>> store.commit("joiner:0", epoch, 2, Ops().meta("offset", "99"))
Traceback (most recent call last):
...
streaming.errors.FencedError: joiner:0: epoch 1 was fenced by epoch 2 (another owner took over)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from streaming.errors import FencedError, ServiceUnavailableError, StateError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Ops:
    """A batch of changes to one scope, applied atomically by :meth:`StateStore.commit`."""

    items: list[tuple[str, ...]] = field(default_factory=list)
    meta_items: dict[str, str] = field(default_factory=dict)

    def hset(self, key: str, fld: str, value: bytes | str) -> Ops:
        self.items.append(("hset", key, fld, _b(value)))  # type: ignore[arg-type]
        return self

    def hdel(self, key: str, fld: str) -> Ops:
        self.items.append(("hdel", key, fld))
        return self

    def hincrby(self, key: str, fld: str, n: int) -> Ops:
        self.items.append(("hincrby", key, fld, str(n)))
        return self

    def zadd(self, key: str, member: str, score: int) -> Ops:
        self.items.append(("zadd", key, member, str(score)))
        return self

    def zrem(self, key: str, member: str) -> Ops:
        self.items.append(("zrem", key, member))
        return self

    def delete(self, key: str) -> Ops:
        self.items.append(("del", key))
        return self

    def meta(self, fld: str, value: str | int) -> Ops:
        self.meta_items[fld] = str(value)
        return self

    def __len__(self) -> int:
        return len(self.items) + len(self.meta_items)


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class StateStore(Protocol):
    """Where partition state lives. One scope = one partition's state, one owner at a time."""

    def claim(self, scope: str) -> int:
        """Become the owner of ``scope``: return a new epoch that fences every earlier one."""
        ...

    def meta(self, scope: str) -> dict[str, str]:
        """The scope's metadata (offsets, watermarks, sequence numbers...)."""
        ...

    def commit(self, scope: str, epoch: int, generation: int, ops: Ops) -> None:
        """Apply ``ops`` atomically if ``epoch`` still owns ``scope``, else raise FencedError.

        ``generation`` numbers checkpoints (1, 2, ...): it must follow the stored one, and a
        commit whose generation is already stored is a retried duplicate and changes nothing,
        so retrying after a lost reply never applies a checkpoint twice.
        """
        ...

    def hmget(self, scope: str, key: str, fields: Sequence[str]) -> list[bytes | None]: ...

    def hgetall(self, scope: str, key: str) -> dict[str, bytes]: ...

    def zrange_upto(self, scope: str, key: str, max_score: int) -> list[str]:
        """Members with score strictly below ``max_score``."""
        ...

    def scopes(self, kind: str) -> list[str]:
        """Every scope of a kind (``joiner``, ``evaluator``) that has metadata."""
        ...


class InMemoryStateStore:
    """The in-memory twin of :class:`RedisStateStore`, for unit tests and examples."""

    def __init__(self) -> None:
        self._epochs: dict[str, int] = {}
        self._meta: dict[str, dict[str, str]] = {}
        self._hashes: dict[tuple[str, str], dict[str, bytes]] = {}
        self._zsets: dict[tuple[str, str], dict[str, int]] = {}

    def claim(self, scope: str) -> int:
        self._epochs[scope] = self._epochs.get(scope, 0) + 1
        return self._epochs[scope]

    def meta(self, scope: str) -> dict[str, str]:
        return dict(self._meta.get(scope, {}))

    def commit(self, scope: str, epoch: int, generation: int, ops: Ops) -> None:
        current = self._epochs.get(scope, 0)
        if current != epoch:
            raise FencedError(_fenced_message(scope, epoch, current))
        stored = int(self._meta.get(scope, {}).get("generation", "0"))
        if stored == generation:
            return
        if stored + 1 != generation:
            msg = f"{scope}: generation {stored} cannot precede {generation}"
            raise StateError(msg)
        self._meta.setdefault(scope, {})["generation"] = str(generation)
        for item in ops.items:
            op, key = item[0], item[1]
            h = self._hashes.setdefault((scope, key), {})
            z = self._zsets.setdefault((scope, key), {})
            if op == "hset":
                h[item[2]] = item[3]  # type: ignore[assignment]
            elif op == "hdel":
                h.pop(item[2], None)
            elif op == "hincrby":
                h[item[2]] = str(int(h.get(item[2], b"0")) + int(item[3])).encode()
            elif op == "zadd":
                z[item[2]] = int(item[3])
            elif op == "zrem":
                z.pop(item[2], None)
            elif op == "del":
                h.clear()
                z.clear()
        if ops.meta_items:
            self._meta.setdefault(scope, {}).update(ops.meta_items)

    def hmget(self, scope: str, key: str, fields: Sequence[str]) -> list[bytes | None]:
        h = self._hashes.get((scope, key), {})
        return [h.get(f) for f in fields]

    def hgetall(self, scope: str, key: str) -> dict[str, bytes]:
        return dict(self._hashes.get((scope, key), {}))

    def zrange_upto(self, scope: str, key: str, max_score: int) -> list[str]:
        z = self._zsets.get((scope, key), {})
        return [m for m, s in sorted(z.items(), key=lambda kv: (kv[1], kv[0])) if s < max_score]

    def scopes(self, kind: str) -> list[str]:
        return sorted(s for s in self._meta if s.split(":", 1)[0] == kind)


def _fenced_message(scope: str, epoch: int, current: int) -> str:
    return f"{scope}: epoch {epoch} was fenced by epoch {current} (another owner took over)"


# ---- Redis --------------------------------------------------------------------------------

_COMMIT_LUA = """
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then
  return redis.error_reply('FENCED ' .. tostring(epoch))
end
local base = ARGV[2]
local gen = redis.call('HGET', base .. 'meta', 'generation') or '0'
if gen == ARGV[4] then
  return 'DUPLICATE'
end
if tonumber(gen) + 1 ~= tonumber(ARGV[4]) then
  return redis.error_reply('GENERATION stored ' .. gen .. ' cannot precede ' .. ARGV[4])
end
redis.call('HSET', base .. 'meta', 'generation', ARGV[4])
local i = 5
local n = tonumber(ARGV[3])
for _ = 1, n do
  local op = ARGV[i]
  local key = base .. ARGV[i + 1]
  if op == 'hset' then
    redis.call('HSET', key, ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'hdel' then
    redis.call('HDEL', key, ARGV[i + 2]); i = i + 3
  elseif op == 'hincrby' then
    redis.call('HINCRBY', key, ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'zadd' then
    redis.call('ZADD', key, ARGV[i + 3], ARGV[i + 2]); i = i + 4
  elseif op == 'zrem' then
    redis.call('ZREM', key, ARGV[i + 2]); i = i + 3
  elseif op == 'del' then
    redis.call('DEL', key); i = i + 2
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
end
if #ARGV >= i then
  local meta = {}
  for j = i, #ARGV do meta[#meta + 1] = ARGV[j] end
  redis.call('HSET', base .. 'meta', unpack(meta))
end
return 'OK'
"""


def redis_client_from_settings(settings: Any) -> Any:
    """A redis-py client with the configured URL, AUTH, TLS, pool size and timeouts."""
    import redis

    kwargs: dict[str, Any] = {
        "max_connections": settings.redis_max_connections,
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_socket_timeout_s,
        "health_check_interval": 30,
    }
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_url.startswith("rediss://") and settings.redis_ssl_ca_certs:
        kwargs["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    return redis.Redis.from_url(settings.redis_url, **kwargs)


def with_retry(
    what: str,
    fn: Callable[[], T],
    *,
    max_backoff_s: float = 30.0,
    give_up_after_s: float | None = None,
    is_stopping: Callable[[], bool] = lambda: False,
) -> T:
    """Call ``fn`` until it succeeds, backing off exponentially on connection errors.

    Logs every retry ("Redis unavailable ... retrying in 2.0s (attempt 3)"). Fencing and other
    logical errors propagate at once.
    """
    import redis

    delay, attempt, start = 0.2, 0, time.monotonic()
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            attempt += 1
            if give_up_after_s is not None and time.monotonic() - start > give_up_after_s:
                msg = f"{what}: Redis unavailable for {give_up_after_s:.0f}s: {exc}"
                raise ServiceUnavailableError(msg) from exc
            if is_stopping():
                msg = f"{what}: Redis unavailable while stopping: {exc}"
                raise ServiceUnavailableError(msg) from exc
            log.warning(
                "%s: Redis unavailable (%s); retrying in %.1fs (attempt %d)",
                what,
                exc,
                delay,
                attempt,
            )
            time.sleep(delay)
            delay = min(delay * 2, max_backoff_s)


class RedisStateStore:
    """Partition state in Redis. Keys: ``<namespace>:{<scope>}:<key>`` (one hash tag a scope)."""

    def __init__(self, client: Any, namespace: str, *, max_backoff_s: float = 30.0) -> None:
        self._r = client
        self._ns = namespace
        self._commit = client.register_script(_COMMIT_LUA)
        self._max_backoff_s = max_backoff_s

    def _base(self, scope: str) -> str:
        return f"{self._ns}:{{{scope}}}:"

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        return with_retry(what, fn, max_backoff_s=self._max_backoff_s)

    def claim(self, scope: str) -> int:
        epoch = self._retry(f"claim {scope}", lambda: self._r.incr(self._base(scope) + "epoch"))
        return int(epoch)

    def meta(self, scope: str) -> dict[str, str]:
        raw = self._retry(f"meta {scope}", lambda: self._r.hgetall(self._base(scope) + "meta"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def commit(self, scope: str, epoch: int, generation: int, ops: Ops) -> None:
        import redis

        base = self._base(scope)
        args: list[Any] = [str(epoch), base, str(len(ops.items)), str(generation)]
        for item in ops.items:
            args.extend(item)
        for k, v in ops.meta_items.items():
            args.extend((k, v))

        def run() -> None:
            try:
                self._commit(keys=[base + "epoch"], args=args)
            except redis.ResponseError as exc:
                if str(exc).startswith("FENCED"):
                    current = str(exc).split(" ", 1)[1]
                    raise FencedError(
                        _fenced_message(scope, epoch, int(current) if current.isdigit() else 0)
                    ) from exc
                if str(exc).startswith("GENERATION"):
                    msg = f"{scope}: {exc}"
                    raise StateError(msg) from exc
                raise

        self._retry(f"checkpoint {scope}", run)

    def hmget(self, scope: str, key: str, fields: Sequence[str]) -> list[bytes | None]:
        if not fields:
            return []
        name = self._base(scope) + key
        return list(self._retry(f"read {scope}", lambda: self._r.hmget(name, list(fields))))

    def hgetall(self, scope: str, key: str) -> dict[str, bytes]:
        name = self._base(scope) + key
        raw = self._retry(f"read {scope}", lambda: self._r.hgetall(name))
        return {k.decode(): v for k, v in raw.items()}

    def zrange_upto(self, scope: str, key: str, max_score: int) -> list[str]:
        name = self._base(scope) + key
        raw = self._retry(
            f"read {scope}", lambda: self._r.zrangebyscore(name, "-inf", f"({max_score}")
        )
        return [m.decode() for m in raw]

    def scopes(self, kind: str) -> list[str]:
        pattern = f"{self._ns}:{{{kind}:*}}:meta"
        keys: Iterable[bytes] = self._retry(
            "scan", lambda: list(self._r.scan_iter(match=pattern, count=1000))
        )
        out = []
        for k in keys:
            s = k.decode()
            out.append(s[s.index("{") + 1 : s.index("}")])
        return sorted(out)
