"""nodes/net/pages.py: a node gives back the clean file pages its start touched, and never a page that is
not the file's own (one copied on write: relocated read-only data of a shared library)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from nodes.net.pages import clean_file_mappings, release_once_ready


def _mapping(range_: str, perms: str, path: str, anonymous_kib: int) -> str:
    return (f"{range_} {perms} 00000000 fe:00 123{' ' * 20}{path}\n"
            f"Size:                  4 kB\nRss:                   4 kB\n"
            f"Anonymous:           {anonymous_kib} kB\nVmFlags: rd mr mw me\n")


SMAPS = "".join([
    _mapping("55d0c0a00000-55d0c0a01000", "r--p", "/usr/bin/python3.11", 0),
    _mapping("55d0c0a01000-55d0c0b00000", "r-xp", "/usr/bin/python3.11", 0),
    _mapping("55d0c0b00000-55d0c0b10000", "r--p", "/usr/bin/python3.11", 84),  # relocated: RELRO
    _mapping("55d0c0c00000-55d0c0c10000", "rw-p", "/usr/bin/python3.11", 4),
    _mapping("55d0c1000000-55d0c2000000", "rw-p", "[heap]", 1024),
    _mapping("7f0000000000-7f0000100000", "rw-p", "", 12),
    _mapping("7f0000100000-7f0000200000", "r--s", "/dev/shm/a file with spaces", 0),
    _mapping("7ffd00000000-7ffd00002000", "r-xp", "[vdso]", 0),
])


def test_only_unwritable_file_mappings_without_a_page_of_their_own_are_chosen():
    assert clean_file_mappings(SMAPS) == [
        (0x55d0c0a00000, 0x55d0c0a01000, "/usr/bin/python3.11"),
        (0x55d0c0a01000, 0x55d0c0b00000, "/usr/bin/python3.11"),
        (0x7f0000100000, 0x7f0000200000, "/dev/shm/a file with spaces")]


RSS_OF = """
def rss_kib(path):
    lines = open("/proc/self/smaps").read().splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith(path))
    return next(int(line.split()[1]) for line in lines[at:] if line.startswith("Rss:"))
"""


def _run(code: str) -> list[int]:
    """Run `code` (with rss_kib) in a fresh Python: the integers it prints."""
    out = subprocess.run([sys.executable, "-c", RSS_OF + textwrap.dedent(code)], capture_output=True,
                         text=True, check=True).stdout
    return [int(word) for word in out.split()]


def test_the_touched_pages_of_a_mapped_file_leave_the_process_rss(tmp_path):
    """A fresh process maps a 4 MiB file, reads every page of it, then releases: the mapping's Rss falls
    from all of it to nothing, and the file still reads the same."""
    data = tmp_path / "blob"
    data.write_bytes(bytes(range(256)) * (4 * 4096))
    before, after, released, same = _run(f"""
        import mmap
        from nodes.net.pages import release_file_pages
        f = open({str(data)!r}, "rb")
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        total = sum(m[i] for i in range(0, len(m), 4096))  # touch every page
        before = rss_kib({str(data)!r})
        released = release_file_pages()
        print(before, rss_kib({str(data)!r}), released, int(m[:] == open({str(data)!r}, "rb").read()))
    """)
    assert (before, after, same) == (4096, 0, 1)
    assert released >= 4 * 1024 * 1024


def test_a_page_written_before_the_mapping_became_read_only_is_kept(tmp_path):
    """Like a shared library's RELRO: a private mapping written to, then made read-only. Unmapping its
    written page would read the file's byte back instead of ours."""
    data = tmp_path / "blob"
    data.write_bytes(b"\x00" * 8192)
    kept, rss = _run(f"""
        import ctypes, mmap
        from nodes.net.pages import release_file_pages
        f = open({str(data)!r}, "rb")
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        m[0] = 7  # copied on write: now the process's own page
        libc = ctypes.CDLL(None)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        assert libc.mprotect(ctypes.addressof(ctypes.c_char.from_buffer(m)), len(m), mmap.PROT_READ) == 0
        release_file_pages()
        print(m[0], rss_kib({str(data)!r}))
    """)
    assert kept == 7
    assert rss >= 4


def test_the_status_releases_once_at_its_first_ready_answer():
    answers = iter([{"ready": False}, {"ready": True}, {"ready": False}, {"ready": True}])
    released = []
    status = release_once_ready(lambda: next(answers), lambda: released.append(1))
    assert [status()["ready"] for _ in range(4)] == [False, True, False, True]
    assert released == [1]
