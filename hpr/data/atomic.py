"""Files written whole or not at all: a file is written under a fresh temporary name in its target folder
(``tempfile.mkstemp``: unpredictable, never an existing file) and renamed onto its final name only once
complete; on an error it is removed. A process killed meanwhile leaves at most a hidden ``.NAME.*.tmp``
beside the target, never a half-written file under the final name. Owns no format: the corpus cache,
token shards, ``meta.json`` and the tokenizer copy all go through here.
Usage: ``with AtomicFile("out/meta.json") as f: f.write(data)`` (renamed on a clean exit), or
``a = AtomicFile(p); f = a.open(); ...; a.close(); ...; a.commit()`` to rename later (or ``a.discard()``).
"""
import os
import tempfile


def _default_mode():
    """The permissions a plain open() would give a new file (0o666 less the umask); mkstemp's are 0o600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class AtomicFile:
    """One file on its way to ``path``; ``tmp`` is its temporary name while it is pending."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.tmp = None
        self.file = None

    def open(self):
        """The temporary file, open for binary writing."""
        folder, name = os.path.split(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        self.file = os.fdopen(fd, "wb")
        return self.file

    def close(self):
        """Close the temporary file (it stays pending: commit() or discard() decides)."""
        if self.file is not None:
            f, self.file = self.file, None
            f.close()

    def commit(self):
        """Rename the complete file onto its final name (atomic within a file system)."""
        self.close()
        os.chmod(self.tmp, _default_mode())
        os.replace(self.tmp, self.path)
        self.tmp = None
        return self.path

    def discard(self):
        """Remove the temporary file (safe to call twice, and after commit: it then does nothing)."""
        try:
            self.close()
        finally:
            if self.tmp is not None:
                tmp, self.tmp = self.tmp, None
                try:
                    os.remove(tmp)
                except OSError:
                    pass

    def __enter__(self):
        return self.open()

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.commit()
        else:
            self.discard()
        return False
