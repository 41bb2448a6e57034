"""hpr's exceptions. Every user-facing failure is an HprError subclass whose message says what is wrong
and what to do. Usage: ``except hpr.HprError as e: print(e)``."""


class HprError(Exception):
    """Base of every error hpr raises on purpose."""


class ConfigError(HprError, ValueError):
    """A bad value, flag, layout or environment setting."""


class KernelsMissing(HprError, ImportError):
    """The compiled kernels (hpr._kernels) are not built or not importable."""


class CommError(HprError):
    """A collective or point-to-point operation could not complete."""


class CommTimeout(CommError, TimeoutError):
    """A peer did not arrive before the deadline (HPR_TIMEOUT seconds)."""


class CommMismatch(CommError):
    """Ranks called a collective with different arguments (found by HPR_CHECK=1)."""


class DataError(ConfigError):
    """A corpus path, file or size that cannot be trained on."""


class CheckpointError(HprError):
    """A checkpoint that is missing, incomplete, corrupted or from another configuration."""
