"""The LMDB backend: one environment per store directory.

Owns what only LMDB needs: one environment per path per process (LMDB forbids
opening one twice), the reader gate (a map resize needs no read transaction
open), map growth, and the translation of LMDB and OS errors into
:class:`~roomstate.StorageError` and :class:`~roomstate.StoreFormatError`.
"""
import os
import stat
import threading

import lmdb

from ..errors import StorageError, StoreFormatError
from ..format import TABLES
from . import Full
from .lmdbfile import check_data_file, db_record_root, root_in_range

# Address space only: LMDB's file grows with the data, not with the map.  A big
# map makes a mid-transaction "map full" (and its replay) rare; it still grows.
DEFAULT_MAP_SIZE = 16 << 30


def _path_kind(path):
    """"dir", "file" or None (nothing there); OSError when it cannot be looked at (permissions)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    return "dir" if stat.S_ISDIR(st.st_mode) else "file"


def _reason(exc):
    """An OS error's reason, said plainly."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)


class Gate:
    """Many reading transactions, or one exclusive step (LMDB needs no reader to resize)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._readers = 0
        self._exclusive = False

    def enter(self):
        with self._cv:
            while self._exclusive:
                self._cv.wait()
            self._readers += 1

    def leave(self):
        with self._cv:
            self._readers -= 1
            if self._readers == 0:
                self._cv.notify_all()

    def exclusive(self, fn):
        with self._cv:
            self._exclusive = True
            try:
                while self._readers:
                    self._cv.wait()
                fn()
            finally:
                self._exclusive = False
                self._cv.notify_all()


class _SharedEnv:
    """One LMDB environment per path per process, shared by the stores open on it."""

    registry: "dict[str, _SharedEnv]" = {}
    registry_lock = threading.Lock()

    def __init__(self, env, key, readonly):
        self.env = env
        self.key = key
        self.readonly = readonly
        self.refs = 1
        self.gate = Gate()
        self.write_lock = threading.RLock()

    @classmethod
    def acquire(cls, path, readonly, opener):
        key = os.path.realpath(path)
        with cls.registry_lock:
            shared = cls.registry.get(key)
            if shared is not None:
                if shared.readonly and not readonly:
                    raise StoreFormatError(
                        f"{path!r} is already open read-only in this process; close it before opening it for writing"
                    )
                shared.refs += 1
                return shared
            shared = cls(opener(), key, readonly)
            cls.registry[key] = shared
            return shared

    def release(self):
        with self.registry_lock:
            self.refs -= 1
            if self.refs == 0:
                del self.registry[self.key]
                self.env.close()


class LmdbBackend:
    """A store directory holding one LMDB environment with a named database per table."""

    full_errors = (lmdb.MapFullError, Full)

    def __init__(self, path, *, readonly=False, durable=True, map_size=None):
        self.path = path
        self.readonly = readonly
        self.durable = durable
        self.meta_page = None  # LMDB's meta page as read at open (lmdbfile.MetaPage), None for a new file
        self._shared = _SharedEnv.acquire(path, readonly, lambda: self._open_env(map_size))
        self.env = self._shared.env
        self.gate = self._shared.gate
        self.write_lock = self._shared.write_lock
        try:
            while True:
                try:
                    self.tables = self._open_tables()
                    break
                except lmdb.MapResizedError:
                    self._adopt_map_size()
        except BaseException:
            self._shared.release()
            raise

    # -- opening -------------------------------------------------------------
    def _open_env(self, map_size):
        path = self.path
        data = os.path.join(path, "data.mdb")
        if path == "":
            raise StorageError("cannot open the store at '': the path is empty")
        try:
            kind = _path_kind(path)
            if kind is None:
                if os.path.islink(path):
                    raise StorageError(f"cannot open the store at {path!r}: it is a symbolic link to a missing path")
                if self.readonly:
                    raise StoreFormatError(f"no roomstate store at {path!r}")
                os.makedirs(path, exist_ok=True)  # another process may be creating it too
            elif kind != "dir":
                raise StoreFormatError(f"{path!r} is not a directory, so not a roomstate store")
            data_size = None
            if _path_kind(data) is not None:
                data_size = os.stat(data).st_size
            elif self.readonly or set(os.listdir(path)) - {"lock.mdb"}:
                # A lock.mdb alone is a store another process is creating right now
                # (LMDB makes the lock file before data.mdb).
                raise StoreFormatError(f"{path!r} is not a roomstate store (it has no data.mdb)")
            size = map_size or DEFAULT_MAP_SIZE
            if data_size is not None:
                self.meta_page = check_data_file(data)
                size = max(size, data_size * 2)
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"cannot open the store at {path!r}: {_reason(exc)}") from exc
        try:
            return lmdb.open(
                path,
                map_size=size,
                max_dbs=len(TABLES) + 2,
                readonly=self.readonly,
                sync=self.durable,
                metasync=self.durable,
                max_readers=1024,
                lock=True,
            )
        except lmdb.Error as exc:
            # A plain lmdb.Error carries an errno (permissions, I/O); its subclasses are LMDB's own codes.
            if type(exc) is lmdb.Error or isinstance(exc, (lmdb.DiskError, lmdb.LockError, lmdb.ReadersFullError)):
                raise StorageError(f"cannot open the store at {path!r}: {exc}") from exc
            raise StoreFormatError(f"cannot open the store at {path!r}: {exc}") from exc
        except OSError as exc:
            raise StorageError(f"cannot open the store at {path!r}: {_reason(exc)}") from exc

    def _open_tables(self):
        env = self.env
        # Named databases are keys of LMDB's main database: an environment
        # holding anything else there was written by another program.
        try:
            with env.begin() as txn:
                records = {bytes(k): bytes(v) for k, v in txn.cursor()}
        except lmdb.Error as exc:
            raise StoreFormatError(f"the store is damaged: {self.path!r}: LMDB's main database cannot be read: {exc}") from exc
        names = set(records)
        foreign = [k for k in names if k.decode("utf-8", "replace") not in TABLES]
        if foreign or (names and b"meta" not in names):
            raise StoreFormatError(f"{self.path!r} is an LMDB environment of another program, not a roomstate store")
        last = self.env.info()["last_pgno"]
        for name, raw in records.items():
            root = db_record_root(raw)
            if root is None:
                raise StoreFormatError(f"{self.path!r} is an LMDB environment of another program, not a roomstate store "
                                       f"(its key {name.decode()!r} is not a table)")
            if not root_in_range(root, last):
                raise StoreFormatError(f"the store is damaged: {self.path!r}: table {name.decode()!r} has its root "
                                       f"at page {root}, past the last page {last}")
        missing = [t for t in TABLES if t.encode() not in names]
        if names and missing:
            raise StoreFormatError(f"{self.path!r} is not a roomstate store: it lacks the tables {', '.join(missing)}")
        if missing and self.readonly:
            raise StoreFormatError(f"{self.path!r} is not a roomstate store (missing tables)")
        try:
            if missing:
                # Every table in one transaction: another process sees all of them or none.
                with env.begin(write=True) as txn:
                    tables = {name: env.open_db(name.encode(), txn=txn, create=True) for name in TABLES}
            else:
                tables = {name: env.open_db(name.encode(), create=False) for name in TABLES}
        except lmdb.MapFullError:
            self.grow()
            return self._open_tables()
        except lmdb.Error as exc:
            raise StoreFormatError(f"{self.path!r} is not a roomstate store: {exc}") from exc
        if not self.readonly:
            env.reader_check()  # free the slots of reader processes that died
        return tables

    def close(self):
        self._shared.release()

    # -- transactions --------------------------------------------------------
    def begin_read(self):
        self.gate.enter()
        try:
            return self.env.begin(buffers=True)
        except lmdb.MapResizedError:
            self.gate.leave()
            self._adopt_map_size()
            self.gate.enter()
            try:
                return self.env.begin(buffers=True)
            except BaseException:
                self.gate.leave()
                raise
        except BaseException:
            self.gate.leave()
            raise

    def reader_done(self):
        """After a read transaction's ``abort()``: let a resize in."""
        self.gate.leave()

    def begin_write(self, parent=None):
        if parent is not None:
            return self.env.begin(write=True, parent=parent, buffers=True)
        self._grow_if_half_full()
        try:
            return self.env.begin(write=True, buffers=True)
        except lmdb.MapResizedError:
            self._adopt_map_size()
            return self.env.begin(write=True, buffers=True)

    def commit(self, txn):
        """Commit a top-level write transaction (its callers turn a failure into
        StorageError through :meth:`storage_error`)."""
        txn.commit()

    def storage_error(self, exc):
        """The StorageError for an LMDB failure during a write, or None for another exception."""
        if isinstance(exc, lmdb.Error) and not isinstance(exc, self.full_errors):
            return StorageError(f"the store at {self.path!r} could not be written: {exc}")
        return None

    def read_error(self, exc):
        """The RoomStateError for an LMDB failure during a read, or None for another exception.

        A page LMDB cannot find or make sense of is damage; a reader table, a lock or the
        disk failing is the medium's."""
        if not isinstance(exc, lmdb.Error):
            return None
        if isinstance(exc, (lmdb.DiskError, lmdb.ReadersFullError, lmdb.TlsFullError, lmdb.LockError)) or type(exc) is lmdb.Error:
            return StorageError(f"the store at {self.path!r} could not be read: {exc}")
        return StoreFormatError(f"the store is damaged: {self.path!r}: LMDB: {exc}")

    # -- map size ------------------------------------------------------------
    @property
    def map_size(self):
        return self.env.info()["map_size"]

    def grow(self):
        size = self.env.info()["map_size"] * 2
        self.gate.exclusive(lambda: self.env.set_mapsize(size))

    def _adopt_map_size(self):
        """Another process grew the map: map the file at its new size."""
        self.gate.exclusive(lambda: self.env.set_mapsize(0))

    def _grow_if_half_full(self):
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        if used * 2 > info["map_size"]:
            self.grow()

    # -- sizes ---------------------------------------------------------------
    def table_stats(self, txn):
        """``{table: {"entries": n, "bytes": b}}``, bytes counted in pages."""
        psize = self.env.stat()["psize"]
        out = {}
        for name in TABLES:
            st = txn.stat(self.tables[name])
            pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            out[name] = {"entries": st["entries"], "bytes": pages * psize}
        return out

    def space(self, tables):
        """Bytes in use, free inside the file, and the file's size."""
        psize = self.env.stat()["psize"]
        in_use = sum(t["bytes"] for t in tables.values()) + 2 * psize  # + the two meta pages
        mapped = (self.env.info()["last_pgno"] + 1) * psize
        data = os.path.join(self.path, "data.mdb")
        file_bytes = os.path.getsize(data) if os.path.exists(data) else 0
        return {"bytes_in_use": in_use, "free_bytes": max(0, mapped - in_use), "file_bytes": file_bytes}
