"""Fake cupy.cuda: Device (thread-local current device, see runtime.py), streams and events that are
always done, and memory pools that hold nothing."""
import threading

from . import runtime

_local = threading.local()


def is_available():
    return runtime.getDeviceCount() > 0


def get_device_id():
    return runtime.getDevice()


class Device:
    """A device id; Device() / Device(None) is the current one. use() or `with` makes it current."""

    def __init__(self, device=None):
        self.id = runtime.getDevice() if device is None else int(device)
        self._prev = []

    def use(self):
        runtime.setDevice(self.id)

    def __enter__(self):
        self._prev.append(runtime.getDevice())
        runtime.setDevice(self.id)
        return self

    def __exit__(self, *exc):
        runtime.setDevice(self._prev.pop())

    def synchronize(self):
        runtime._check(self.id)

    @property
    def compute_capability(self):
        runtime._check(self.id)
        return "90"

    @property
    def mem_info(self):
        return runtime.memGetInfo()

    def __int__(self):
        return self.id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Stream:
    """A stream on which all work is already done (the fake runs everything eagerly)."""
    null = None

    def __init__(self, null=False, non_blocking=False, ptr=0):
        self.ptr = 0 if null else id(self)
        self._prev = []

    def synchronize(self):
        pass

    def use(self):
        _local.stream = self
        return self

    def __enter__(self):
        self._prev.append(get_current_stream())
        return self.use()

    def __exit__(self, *exc):
        self._prev.pop().use()

    def record(self, event=None):
        return (event or Event()).record(self)

    def wait_event(self, event):
        pass

    @property
    def done(self):
        return True


Stream.null = Stream(null=True)


def get_current_stream():
    return getattr(_local, "stream", Stream.null)


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        pass

    def record(self, stream=None):
        return self

    def synchronize(self):
        pass

    @property
    def done(self):
        return True


def get_elapsed_time(start_event, end_event):
    return 0.0


class MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_bytes(self):
        return 0

    def n_free_blocks(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0


class PinnedMemoryPool(MemoryPool):
    pass


_pool, _pinned_pool = MemoryPool(), PinnedMemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pinned_pool


def set_allocator(allocator=None):
    pass


def set_pinned_memory_allocator(allocator=None):
    pass
