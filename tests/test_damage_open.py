"""A damaged or foreign store is refused at open, with an error naming the path (issue 14).

A truncated ``data.mdb`` is caught before LMDB maps it (a page past the end of the file
is a SIGBUS on first touch); OS errors are StorageErrors with the path and the reason;
LMDB environments of other programs are StoreFormatErrors.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import lmdb
import pytest

import roomstate
from roomstate import StorageError, StoreFormatError, workloads
from roomstate.storage.lmdbfile import read_meta


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("damage") / "store"
    with roomstate.open(path, resolver="newest_event", check_auth=False) as store:
        store.add_events(list(workloads.hq(1500, seed=3)))
    return path


def _copy(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("lock.mdb"))
    return dst


def _child(code, *args):
    """Run ``code`` in a child process; its exit status and output."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_meta_page_is_read_as_lmdb_reads_it(small_store):
    with roomstate.open(small_store, readonly=True) as store:
        info, psize = store.env.info(), store.env.stat()["psize"]
    with open(small_store / "data.mdb", "rb") as f:
        meta = read_meta(f)
    assert (meta.page_size, meta.last_page, meta.txnid) == (psize, info["last_pgno"], info["last_txnid"])


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_data_file_is_an_error_not_a_crash(small_store, tmp_path, readonly, keep):
    path = _copy(small_store, tmp_path / "copy")
    data = path / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, int(size * keep))
    # In a child: before the check, this was a SIGBUS on the first read.
    rc, out = _child(
        """
        import sys, roomstate
        try:
            store = roomstate.open(sys.argv[1], readonly=sys.argv[2] == "1")
        except roomstate.StoreFormatError as exc:
            print("refused:", exc)
        else:
            store.rooms()
            print("opened")
        """,
        path,
        int(readonly),
    )
    assert rc == 0, out
    assert "refused: the store is damaged" in out and "truncated" in out and str(data) in out, out
    assert data.stat().st_size == int(size * keep)  # nothing written


def test_the_cli_reports_a_truncated_store(small_store, tmp_path):
    path = _copy(small_store, tmp_path / "copy")
    os.truncate(path / "data.mdb", 8192 * 3)
    proc = subprocess.run([sys.executable, "-m", "roomstate", "stats", "--db", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode > 0, proc
    assert "truncated" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_both_meta_pages_damaged_is_refused(small_store, tmp_path):
    path = _copy(small_store, tmp_path / "copy")
    with open(path / "data.mdb", "r+b") as f:
        f.write(bytes(64))
        f.seek(4096)
        f.write(bytes(64))
    with pytest.raises(StoreFormatError, match="no valid LMDB meta page"):
        roomstate.open(path, readonly=True)


def test_one_damaged_meta_page_uses_the_other(small_store, tmp_path):
    """LMDB keeps two meta pages for this; a damaged older one leaves the store readable
    (LMDB itself then refuses it: a StoreFormatError, never a crash)."""
    path = _copy(small_store, tmp_path / "copy")
    with open(path / "data.mdb", "rb") as f:
        meta = read_meta(f)
    with open(path / "data.mdb", "r+b") as f:
        older = 4096 if meta.txnid % 2 == 0 else 0  # LMDB writes meta page txnid % 2
        f.seek(older + 136)
        f.write((1 << 40).to_bytes(8, "little"))  # a last page far past the end
    try:
        with roomstate.open(path, readonly=True) as store:
            assert store.rooms()
    except StoreFormatError:
        pass


def test_a_table_root_past_the_end_is_refused(small_store, tmp_path):
    path = _copy(small_store, tmp_path / "copy")
    env = lmdb.open(str(path), max_dbs=20, lock=False, readonly=True)
    with env.begin() as txn:
        record = bytes(txn.get(b"blocks"))
    env.close()
    # LMDB refuses to write a table's record itself: patch it in the file.
    data = (path / "data.mdb").read_bytes()
    assert data.count(b"blocks" + record) >= 1
    damaged = record[:40] + (10**9).to_bytes(8, "little")
    (path / "data.mdb").write_bytes(data.replace(b"blocks" + record, b"blocks" + damaged))
    with pytest.raises(StoreFormatError, match="table 'blocks' has its root at page 1000000000"):
        roomstate.open(path, readonly=True)


# -- OS errors -----------------------------------------------------------------

def _without_root_powers():
    """A prefix that runs a command without the capabilities that let root ignore file
    modes (tests run as root in CI), or None where permissions cannot be tested."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}"]


_OPEN = """
import sys, roomstate
try:
    roomstate.open(sys.argv[1], readonly=sys.argv[2] == "1").close()
    print("OPENED")
except roomstate.RoomStateError as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("readonly", [False, True])
def test_permission_errors_at_open_say_permission_denied(tmp_path, readonly):
    prefix = _without_root_powers()
    if prefix is None:
        pytest.skip("running as root without setpriv: file modes do not apply")
    closed = tmp_path / "mode000"
    closed.mkdir()
    closed.chmod(0)
    locked = tmp_path / "readonly-parent"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for path in (closed, locked / "store"):
            proc = subprocess.run(prefix + [sys.executable, "-c", _OPEN, str(path), str(int(readonly))], capture_output=True, text=True, timeout=60)
            out = proc.stdout + proc.stderr
            if path == locked / "store" and readonly:
                assert out.startswith("StoreFormatError no roomstate store"), out
                continue
            assert out.startswith("StorageError"), out
            assert "permission denied" in out and str(path) in out, out
    finally:
        closed.chmod(0o755)
        locked.chmod(0o755)


@pytest.mark.parametrize("readonly", [False, True])
def test_a_dangling_symlink_and_an_empty_path_are_storage_errors(tmp_path, readonly):
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(StorageError, match="symbolic link to a missing path") as info:
        roomstate.open(link, readonly=readonly)
    assert str(link) in str(info.value)
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(StorageError, match="the path is empty"):
        roomstate.open("", readonly=readonly)


# -- foreign environments ------------------------------------------------------

def test_a_meta_key_that_is_not_a_table_is_refused(tmp_path):
    env = lmdb.open(str(tmp_path), max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"meta", b"not a table")
    env.close()
    with pytest.raises(StoreFormatError, match="another program"):
        roomstate.open(tmp_path, check_auth=False)
    with pytest.raises(StoreFormatError, match="another program"):
        roomstate.open(tmp_path, readonly=True)


def test_an_environment_with_only_meta_is_refused(tmp_path):
    env = lmdb.open(str(tmp_path), max_dbs=4)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"format", (1).to_bytes(8, "big"), db=meta)
    env.close()
    for readonly in (False, True):
        with pytest.raises(StoreFormatError, match="lacks the tables ids, names_r"):
            roomstate.open(tmp_path, readonly=readonly)


def test_a_new_store_gets_every_table(tmp_path):
    with roomstate.open(tmp_path / "s", check_auth=False):
        pass
    env = lmdb.open(str(tmp_path / "s"), max_dbs=20, readonly=True, lock=False)
    with env.begin() as txn:
        names = sorted(bytes(k).decode() for k, _ in txn.cursor())
    env.close()
    assert names == sorted(roomstate.format.TABLES)
