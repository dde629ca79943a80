"""The OS's refusals, for root too: forbid(monkeypatch) makes paths behave as after `chmod 000`.

Root reads any file whatever its mode, so chmod alone proves nothing where the tests run as
root. After `block = forbid(monkeypatch)` and `block(path)`, path itself can be stat'ed but not
opened or listed, and what is under it can be neither (PermissionError), through os.stat,
os.open, open, os.scandir and os.listdir.
"""
import os


def forbid(monkeypatch):
    """Patch the OS's doors; returns block(path), which makes path behave as chmod 000."""
    forbidden = []
    real = {"stat": os.stat, "open": os.open, "scandir": os.scandir, "listdir": os.listdir}
    import builtins
    real_builtin_open = builtins.open

    def blocked(path, itself=True):
        try:
            path = os.path.abspath(os.fspath(path))
        except TypeError:  # a file descriptor
            return False
        return any((itself and path == f) or path.startswith(f + os.sep) for f in forbidden)

    def refuse(path):
        raise PermissionError(13, "Permission denied", os.fspath(path))

    def stat(path, *args, **kwargs):
        return refuse(path) if blocked(path, False) else real["stat"](path, *args, **kwargs)

    def open_(path, *args, **kwargs):
        return refuse(path) if blocked(path) else real["open"](path, *args, **kwargs)

    def scandir(path=".", *args, **kwargs):
        return refuse(path) if blocked(path) else real["scandir"](path, *args, **kwargs)

    def listdir(path=".", *args, **kwargs):
        return refuse(path) if blocked(path) else real["listdir"](path, *args, **kwargs)

    def builtin_open(path, *args, **kwargs):
        return refuse(path) if blocked(path) else real_builtin_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(builtins, "open", builtin_open)
    return lambda path: forbidden.append(os.path.abspath(path))
