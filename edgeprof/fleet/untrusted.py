"""What the head accepts from a device: the messages a Dask worker sends, and data that cannot be code.

A device certificate may be stolen with its board, so whatever a device sends the head is untrusted. Two
fences keep it data (`head.py` applies them to every read from a device, and from a connection to one):

- operations: a device's connection may carry only what a Dask worker sends its scheduler
  (`DEVICE_OPS`), not a client's requests (`Client.run`, graphs, plugins);
- payloads: Dask passes a task's result and a task's error to the client as pickles, and unpickling is
  running code. The head does not unpickle them (it never deserializes payloads); it reads each pickle's
  opcodes instead and forwards only pickles that build plain values (dicts, lists, strings, numbers,
  bytes) or, for an error, instances of exception classes and tracebacks (`ALLOWED_GLOBALS`). A pickle
  that names any other callable (`os.system`, a class whose `__reduce__` does something) is refused
  before any client sees it. A fleet's tasks return plain values only (`node.py`).
"""

from __future__ import annotations

import builtins
import pickletools

DEVICE_OPS = frozenset({
    "register-worker", "heartbeat_worker", "who_has", "close",  # requests of a worker's own connections
    "task-finished", "task-erred", "release-worker-data", "add-keys", "long-running", "reschedule", "keep-alive",
    "log-event", "worker-status-change", "request-refresh-who-has", "close-stream",  # its registered stream
})
_TRACEBACK_GLOBALS = {("tblib.pickling_support", name) for name in ("unpickle_traceback", "unpickle_exception",
                                                                    "unpickle_exception_with_attrs")}
_TRACEBACK_GLOBALS |= {("tblib", name) for name in ("Code", "Frame", "Traceback", "_AttrDict")}
_IMPORTING = {"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


class Refused(PermissionError):
    """Something a device sent that the head does not forward."""


def allowed_global(module: str, name: str) -> bool:
    """Exception classes (built-in or edgeprof's) and tblib's traceback rebuilders: calling them builds an
    error to show, nothing else."""
    if (module, name) in _TRACEBACK_GLOBALS:
        return True
    if module == "builtins":
        value = getattr(builtins, name, None)
        return isinstance(value, type) and issubclass(value, BaseException)
    if module == "edgeprof.errors":
        import edgeprof.errors as errors

        value = getattr(errors, name, None)
        return isinstance(value, type) and issubclass(value, BaseException)
    return False


def check_pickle(data: bytes, must_parse: bool = True) -> None:
    """Raise `Refused` unless every global the pickle `data` would load is an `allowed_global`.

    Opcodes are checked in order, as `pickle.loads` would run them, so a stream that turns unreadable
    part-way has had every global before that point checked; with `must_parse` False such bytes pass
    (they are not a pickle a client could run to the end, and not code before the point they break)."""
    try:
        for module, attr in _globals(data):
            if not allowed_global(module, attr):
                raise Refused(f"a pickle from a device names {module}.{attr}")
    except (ValueError, EOFError, KeyError) as exc:  # not (or no longer) a pickle
        if must_parse:
            raise Refused(f"a device sent an unreadable pickle ({exc})") from None


def _globals(data: bytes):
    """The (module, name) of each global the pickle loads, in order; `Refused` for an opcode that loads one
    this reading cannot name (extension registry, persistent ids)."""
    strings: list = []
    memo: dict[int, object] = {}
    last = None
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name in _STRINGS:
            last = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            strings.append(last)
        elif name == "MEMOIZE":
            memo[len(memo)] = last
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = last
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            last = memo.get(int(arg))
            strings.append(last)
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            yield module, attr
        elif name == "STACK_GLOBAL" and len(strings) >= 2 and all(isinstance(x, str) for x in strings[-2:]):
            yield strings[-2], strings[-1]
        elif name in _IMPORTING:
            raise Refused(f"a pickle from a device uses {name}")
        else:
            last = None


def _is_bytes_type(pickled) -> bool:
    """Whether a Dask header's pickled type names only bytes, bytearray or memoryview (read, never unpickled)."""
    try:
        names = list(_globals(bytes(pickled))) if isinstance(pickled, (bytes, bytearray)) else []
    except (ValueError, EOFError, KeyError, Refused):
        return False
    return bool(names) and all(n in (("builtins", "bytes"), ("builtins", "bytearray"), ("builtins", "memoryview"))
                               for n in names)


def check_payloads(value, depth: int = 0) -> None:
    """Walk a message read from a device (Dask left its payloads serialized) and check every payload."""
    from distributed.protocol.compression import decompress
    from distributed.protocol.serialize import Serialized

    if depth > 64:
        raise Refused("a message from a device nests too deep")
    if isinstance(value, Serialized):
        header, frames = value.header, list(value.frames)
        if any(header.get("compression") or ()):
            frames = decompress(header, frames)
        if "split-num-sub-frames" in header:  # as Dask's merge_and_deserialize joins them
            frames = [b"".join(bytes(f) for f in frames[offset:offset + n])
                      for n, offset in zip(header["split-num-sub-frames"], header["split-offsets"])]
        _check_serialized(header, frames, depth)
    elif isinstance(value, dict):
        for item in value.values():
            check_payloads(item, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            check_payloads(item, depth + 1)


def _check_serialized(header: dict, frames: list, depth: int) -> None:
    """One payload as Dask's `deserialize` would read it: a collection's parts, or one serializer's frames."""
    if depth > 64:
        raise Refused("a payload from a device nests too deep")
    if "is-collection" in header:
        if header.get("type-serialized") not in ("tuple", "list", "set", "dict"):
            raise Refused("a device sent a collection of an unknown type")
        start = 0
        for sub_header, length in zip(header["sub-headers"], header["frame-lengths"]):
            _check_serialized(sub_header, frames[start:start + length], depth + 1)
            start += length
        return
    serializer = header.get("serializer")
    if serializer == "pickle":
        check_pickle(bytes(frames[0]))
    elif serializer == "dask" and _is_bytes_type(header.get("type-serialized")):
        # Raw bytes: Dask ships a task's error this way and the client unpickles them (`clean_exception`).
        check_pickle(b"".join(bytes(f) for f in frames), must_parse=False)
    elif serializer not in ("msgpack", "error") or "type-serialized" in header:
        raise Refused(f"a device sent a payload serialized with {serializer!r}")
