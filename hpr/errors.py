"""hpr's exceptions. Every user-facing failure is an HprError subclass whose message says what is wrong
and what to do. A floor module: it imports nothing of hpr. Usage: ``except hpr.HprError as e: print(e)``."""
import os

SOURCE_TREE_MARKERS = ("meson.build", "pyproject.toml")  # beside hpr/ in a checkout, never in site-packages


class HprError(Exception):
    """Base of every error hpr raises on purpose."""


class ConfigError(HprError, ValueError):
    """A bad value, flag, layout or environment setting."""


class KernelsMissing(HprError, ImportError):
    """The compiled kernels (hpr._kernels) are not built or not importable."""

    @classmethod
    def at(cls, package_dir, cause):
        """The error for an import of hpr._kernels from package_dir that failed with `cause`. hpr imported
        from its source checkout (Python put the checkout first on sys.path, e.g. `python -m` in the
        repository root) has no compiled kernels there: say so, as NumPy and mpi4py do, rather than
        load another copy of hpr in its place."""
        root = os.path.dirname(os.path.abspath(package_dir))
        built = any(f.startswith("_kernels.") and f.endswith((".so", ".pyd")) for f in os.listdir(package_dir))
        if not built and any(os.path.isfile(os.path.join(root, m)) for m in SOURCE_TREE_MARKERS):
            return cls(f"you are importing hpr from its source tree at {root} without the compiled kernels "
                       f"(hpr._kernels: {cause}); cd elsewhere to use the installed hpr, or build them "
                       "in place with pip install --no-build-isolation -e .")
        return cls(f"hpr's compiled kernels (hpr._kernels) could not be imported from {package_dir}: {cause}. "
                   "Reinstall the package (pip install .), or for development use an editable install "
                   "(pip install --no-build-isolation -e .).")


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
