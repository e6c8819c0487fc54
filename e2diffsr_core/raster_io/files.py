"""Files on disk: which files an input really is, whether an output may be written, and the run folder.

Safety rules, each enforced here and nowhere else:

* The input is never overwritten, whatever name reaches it: every file GDAL reads for the input (a VRT's
  sources, the file behind ``GTIFF_DIR:``/``NETCDF:``-style connection strings, the archive behind ``/vsizip/``)
  is compared with each output.
* ``overwrite`` replaces only a GeoTIFF, never a folder, a device, a model file or any other file.
* Everything a run writes lives in one hidden run folder beside the output (``.e2diffsr-run-XXXXXXXX``),
  locked for the run's lifetime. Finished outputs are moved out of it; the folder is removed however the run
  ends, and a later run removes the folders of runs that died (their lock is free again).
* A finished output is moved into place without replacing a file that appeared meanwhile (unless
  overwriting was asked for, and then only a GeoTIFF).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import time
import xml.etree.ElementTree as ET

from osgeo import gdal

from e2diffsr_core.errors import E2DiffSRError

from .gdal_errors import collect_failures

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; stale run folders are recognised by age alone
    fcntl = None

RUN_PREFIX = ".e2diffsr-run-"
LOCK_NAME = "lock"
#: A run folder before it is locked (see RunFolder); removed by the sweep only once stale.
NEW_PREFIX = ".e2diffsr-new-"
#: Leftovers without a lock (older versions, or a run killed between creating its folder and locking it)
#: are removed once older than this.
STALE_AGE_S = 24 * 3600
#: The exact names older versions gave their temporary files (tempfile's 8 characters, 8 hex digits): the
#: sweep removes nothing else, so a user's own hidden file that merely contains such a word is left alone.
_LEGACY_NAMES = re.compile(r"^(\.e2diffsr-latent-[a-z0-9_]{8}|\..+\.partial-[0-9a-f]{8}(\.[A-Za-z0-9]+)*)$")
GEOTIFF_SUFFIXES = (".tif", ".tiff")


# -- the input ---------------------------------------------------------------------------------------------
def _vsi_container(path: str) -> str:
    """The file on disk behind a GDAL virtual path (``/vsizip/a.zip/b.tif`` -> ``a.zip``), else ``path``."""
    if not path.startswith("/vsi"):
        return path
    rest = path.split("/", 2)[2] if path.count("/") >= 2 else ""
    if path.startswith("/vsisubfile/") and "," in rest:
        rest = rest.split(",", 1)[1]
    rest = rest.lstrip("{")
    parts = rest.split("/")
    for n in range(len(parts), 0, -1):  # the longest prefix that is a file on disk
        candidate = "/" + "/".join(p for p in parts[:n] if p) if rest.startswith("/") else "/".join(parts[:n])
        candidate = candidate.rstrip("}")
        if candidate and os.path.isfile(candidate):
            return candidate
    return path


def source_files(ds, name: str) -> list[str]:
    """Every file on disk that GDAL reads for dataset ``ds`` opened as ``name`` (for the same-file check):
    what GDAL lists, and what hides behind names it does not follow (VRT sources given as connection strings
    such as ``GTIFF_DIR:`` or ``vrt://``, a VRT's mask-band and overview sources, ``/vsisparse/`` regions,
    ``/vsistdin/`` redirected from a file), followed through nested VRTs."""
    files = [name]
    try:
        files += ds.GetFileList() or []
    except RuntimeError:
        pass
    out: list[str] = []
    todo, seen = list(files), set()
    while todo and len(seen) < 1000:  # a cycle of VRTs cannot keep this going
        f = todo.pop(0)
        if f in seen:
            continue
        seen.add(f)
        todo += _names_behind(f)
        disk = _vsi_container(f)
        if disk and os.path.isfile(disk) and disk not in out:
            out.append(disk)
    return out


_CONNECTION = re.compile(r"^[A-Za-z0-9_]+:")


def _names_behind(name: str) -> list[str]:
    """Names GDAL reads through ``name`` that its file list may not show."""
    if name.startswith("vrt://"):
        return [name[len("vrt://"):].split("?", 1)[0]]
    if name.startswith("/vsistdin"):
        stdin = os.path.realpath("/dev/stdin")
        return [stdin] if os.path.isfile(stdin) else []
    if name.startswith("/vsisparse/"):
        return _xml_names(name[len("/vsisparse/"):], ("Filename",), "relative")
    if _CONNECTION.match(name) and not os.path.exists(name):
        behind = [p.strip('"') for p in name.split(":") if os.path.isfile(p.strip('"'))]
        return behind + _opened_files(name)
    if name.lower().endswith(".vrt") and os.path.isfile(name):
        return _xml_names(name, ("SourceFilename",), "relativeToVRT")
    return []


def _xml_names(path: str, tags: tuple[str, ...], relative_attr: str) -> list[str]:
    """File names inside an XML description (a VRT, a sparse file), made absolute where marked relative."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    folder = os.path.dirname(os.path.abspath(path))
    names = []
    for el in root.iter():
        if el.tag in tags and el.text:
            text = el.text.strip()
            relative = el.get(relative_attr, "0") == "1"
            names.append(os.path.join(folder, text) if relative and not text.startswith("/") else text)
    return names


def _opened_files(name: str) -> list[str]:
    """The file list of a connection string, asking GDAL to open it (quietly: it may not be a raster)."""
    found = []
    with collect_failures(quiet=True):
        ds = gdal.OpenEx(name, gdal.OF_RASTER | gdal.OF_READONLY)
        found = list(ds.GetFileList() or []) if ds is not None else []
        ds = None
    return found


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# -- the output --------------------------------------------------------------------------------------------
def _is_geotiff(path: str) -> bool:
    found = []
    with collect_failures(quiet=True):
        found.append(gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY, allowed_drivers=["GTiff", "COG"]))
    return bool(found) and found[0] is not None


def _name_limit(folder: str) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def reference_files(path: str) -> list[str]:
    """:func:`source_files` of another raster the run reads (the ``--align-to`` reference)."""
    found: list = []
    with collect_failures(quiet=True):
        found.append(gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY))
    ds = found[0] if found else None
    return source_files(ds, path) if ds is not None else [p for p in (path,) if os.path.isfile(p)]


def check_output(path: str, inputs: list[str], overwrite: bool, label: str = "output",
                 flag: str = "--overwrite", reference: list[str] = ()) -> None:
    """Refuse, before any work, an output that cannot or must not be written; ``inputs`` from :func:`source_files`,
    ``reference`` the files of the ``--align-to`` reference (never replaced either)."""
    if not path:
        raise E2DiffSRError(f"no {label} file given; give a file name such as out.tif")
    if path.startswith("/vsi"):
        raise E2DiffSRError(f"{label} {path} is a GDAL virtual path; write to a file on disk (e.g. out.tif)")
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise E2DiffSRError(f"{label} {path} is a folder; give a file name such as {path.rstrip('/' + os.sep)}/out.tif")
    if not path.lower().endswith(GEOTIFF_SUFFIXES):
        raise E2DiffSRError(
            f"{label} {path} does not end in .tif or .tiff; this tool writes GeoTIFF, so name it e.g. "
            f"{os.path.splitext(path)[0]}.tif (gdal_translate converts it to other formats afterwards)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise E2DiffSRError(f"{label} folder does not exist: {folder}; create it first")
    name = os.path.basename(path)
    limit = _name_limit(folder)
    if len(os.fsencode(name)) > limit:
        raise E2DiffSRError(f"{label} file name is {len(os.fsencode(name))} bytes long but this file system allows "
                            f"at most {limit}; choose a shorter name")
    for src in inputs:
        if _same_file(path, src):
            what = "the input raster" if _same_file(src, inputs[0]) else f"a file the input reads ({src})"
            raise E2DiffSRError(f"{label} {path} is {what}; choose a different {label} file")
    for src in reference:
        if _same_file(path, src):
            raise E2DiffSRError(f"{label} {path} is a file the reference grid (--align-to) reads ({src}); choose a "
                                f"different {label} file")
    if os.path.lexists(path):
        if not overwrite:
            raise E2DiffSRError(f"{label} {path} exists; choose another name or allow overwriting ({flag})")
        _check_replaceable(path, label)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise E2DiffSRError(f"{label} folder is not writable: {folder}; choose another folder")
    check_side_files(path, inputs, overwrite, label, flag)


#: Files GDAL finds beside a GeoTIFF by name and applies to it: after the file's full name (overviews, masks,
#: PAM metadata that can change CRS, nodata, scale and offset) and after its name without the extension (world
#: and MapInfo files that give a geotransform, RPC and imagery metadata files, old-style overviews).
SIDE_AFTER_NAME = (".ovr", ".msk", ".aux.xml", ".aux")
SIDE_AFTER_STEM = (".ovr", ".aux", ".tfw", ".tifw", ".tiffw", ".wld", ".tab", ".rpb", "_rpc.txt", ".imd")


def side_files(path: str, after_stem: bool = True) -> list[str]:
    """The existing files GDAL would attach to a GeoTIFF at ``path`` (names compared without case, as GDAL
    tries both cases); ``after_stem`` False: only those after the full name, which GDAL attaches to any
    dataset (a VRT's overviews, mask and PAM metadata)."""
    folder, name = os.path.split(os.path.abspath(path))
    stem = os.path.splitext(name)[0]
    wanted = {(name + s).lower() for s in SIDE_AFTER_NAME}
    if after_stem:
        wanted |= {(stem + s).lower() for s in SIDE_AFTER_STEM}
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(os.path.join(folder, n) for n in names
                  if n.lower() in wanted and os.path.isfile(os.path.join(folder, n)))


def check_side_files(path: str, inputs: list[str], overwrite: bool, label: str, flag: str,
                      after_stem: bool = True) -> None:
    """A side file of an earlier file would be applied to the new output: it is removed when the output is
    published, so only with ``overwrite``, and never when the run reads it."""
    for side in side_files(path, after_stem):
        if any(_same_file(side, src) for src in inputs):
            raise E2DiffSRError(f"{label} {path}: {side} lies beside it and the input reads it, yet GDAL would "
                                f"apply it to the new file too; choose another {label} name")
        if not overwrite:
            raise E2DiffSRError(f"{label} {path}: {os.path.basename(side)} (left from an earlier file) lies beside "
                                f"it and GDAL would apply it to the new file; remove it, choose another name, or "
                                f"allow overwriting ({flag}), which removes it")


def _check_sticky(path: str, label: str) -> None:
    """In a folder with the sticky bit (as /tmp) only a file's owner may replace it: found now, not after the
    whole computation."""
    if not hasattr(os, "geteuid"):
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st_dir, st = os.stat(folder), os.lstat(path)
    except OSError:
        return
    if st_dir.st_mode & stat.S_ISVTX and os.geteuid() not in (0, st.st_uid, st_dir.st_uid):
        raise E2DiffSRError(f"{label} {path} belongs to another user in a folder where only a file's owner may "
                            "replace it (sticky bit); choose another name")


def raster_driver(path: str) -> str | None:
    """The GDAL driver that recognises ``path`` as a raster (for messages about a raster given as a model)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK" or head[:1] == b"\x80":  # a zip (torch.save) or a pickle: a checkpoint, not a raster
        return None
    found: list = []
    with collect_failures(quiet=True):
        found.append(gdal.IdentifyDriverEx(path, gdal.OF_RASTER))
    return found[0].ShortName if found and found[0] is not None else None


def _check_replaceable(path: str, label: str) -> None:
    if os.path.islink(path) and not os.path.exists(path):
        return  # a dangling link: replacing it loses nothing
    _check_sticky(path, label)
    if not os.path.isfile(path):
        raise E2DiffSRError(f"{label} {path} exists and is not a regular file; it is never replaced, "
                            "choose another name")
    if not _is_geotiff(path):
        raise E2DiffSRError(f"{label} {path} exists and is not a GeoTIFF; only a GeoTIFF is ever replaced, "
                            "choose another name or remove that file yourself")


def publish(temp: str, target: str, overwrite: bool, label: str = "output") -> None:
    """Move the finished ``temp`` to ``target``; never replaces a file that appeared during the run unless
    ``overwrite`` (and then only a GeoTIFF)."""
    if overwrite:
        if os.path.lexists(target):
            _check_replaceable(target, label)
        os.replace(temp, target)
        return
    try:
        os.link(temp, target)  # atomic and refuses an existing target
    except FileExistsError:
        raise E2DiffSRError(
            f"{label} {target} was created by something else while this run was working; it was left as it "
            "is and nothing was written; choose another name or allow overwriting") from None
    except OSError as exc:  # a file system without hard links: check, then move (a short race remains)
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(target):
            raise E2DiffSRError(
                f"{label} {target} was created by something else while this run was working; it was left as "
                "it is and nothing was written; choose another name or allow overwriting") from None
        os.replace(temp, target)
        return
    os.remove(temp)


def publish_with_sides(final: str, target: str, overwrite: bool, label: str = "output") -> None:
    """Publish ``final`` at ``target`` with the side files GDAL wrote beside it (``.aux.xml``, a requested
    ``.tfw``, ...), after removing the side files of an earlier file there, so that the output is exactly
    what this run wrote. (A stale side file without ``overwrite`` was refused before the run.)"""
    folder, name = os.path.split(final)
    stem = os.path.splitext(name)[0]
    target = os.path.abspath(target)
    t_stem = os.path.splitext(target)[0]
    made = {}
    for n in os.listdir(folder):
        if n != name and n.startswith(name):
            made[os.path.join(folder, n)] = target + n[len(name):]
        elif n.startswith(stem) and n[len(stem):].lower() in SIDE_AFTER_STEM:
            made[os.path.join(folder, n)] = t_stem + n[len(stem):]
    publish(final, target, overwrite, label)
    for stale in side_files(target):
        if stale not in made.values():
            os.remove(stale)
    for src, dst in made.items():
        os.replace(src, dst)


# -- the run folder ----------------------------------------------------------------------------------------
def _lock(fd: int, blocking: bool) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


def _age(path: str) -> float:
    try:
        return time.time() - os.lstat(path).st_mtime
    except OSError:
        return 0.0


def remove_stale(folder: str) -> list[str]:
    """Remove what runs that died left in ``folder``: run folders whose lock is free, and unlocked leftovers
    older than :data:`STALE_AGE_S`. Returns the names removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if name.startswith(RUN_PREFIX) and os.path.isdir(path) and not os.path.islink(path):
            lock = os.path.join(path, LOCK_NAME)
            try:
                fd = os.open(lock, os.O_RDWR)
            except OSError:
                dead = _age(path) > STALE_AGE_S
            else:
                try:  # a live run holds the lock; the kernel released the lock of one that died
                    dead = _lock(fd, blocking=False) if fcntl is not None else _age(lock) > STALE_AGE_S
                finally:
                    os.close(fd)
            if dead:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
        elif (_LEGACY_NAMES.match(name) or name.startswith(NEW_PREFIX)) and _age(path) > STALE_AGE_S:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.remove(path)
                except OSError:
                    continue
            removed.append(name)
    return removed


class RunFolder:
    """A hidden, locked folder beside the output for everything this run writes before it is finished."""

    def __init__(self, folder: str):
        remove_stale(folder)
        self.path = None
        self._fd = None
        # made under a name the sweep ignores, locked, then renamed: another run's sweep never sees it unlocked
        token = secrets.token_hex(4)
        fresh = os.path.join(folder, NEW_PREFIX + token)
        try:
            os.mkdir(fresh)
            self.path = fresh
            self._fd = os.open(os.path.join(fresh, LOCK_NAME), os.O_CREAT | os.O_RDWR, 0o644)
            _lock(self._fd, blocking=True)
            path = os.path.join(folder, RUN_PREFIX + token)
            os.rename(fresh, path)  # the lock belongs to the open file, not to its name: it stays held
            self.path = path
        except OSError as exc:
            self.close()
            raise E2DiffSRError(f"cannot create a file in {folder} ({exc.strerror}); "
                                "choose a folder you can write to") from None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def close(self) -> None:
        """Remove the folder and all it holds (safe to call twice)."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):  # pragma: no cover - an abandoned run folder is removed
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
