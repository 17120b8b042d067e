"""Time-zone rules: the one tzdata a node computes slots with (:class:`TimeZoneRules`).

A cron slot is a UTC instant computed from an expression, a zone and the time-zone database
(IANA tzdata). Two releases can disagree about a zone's future offsets (America/Vancouver from
November 2026: UTC-8 in tzdata 2025b, UTC-7 in 2026f), so two nodes with different tzdata
compute different slots for one task, and a change of owner fires that day's run twice or not
at all. peerd therefore reads every zone from *one* source it names, never from whatever
``zoneinfo.ZoneInfo(name)`` finds first (it tries the system's directories, then falls back to
the PyPI ``tzdata`` package: two databases in one process):

==========  ====================================================  ============================
source      where zones come from                                 version read from
==========  ====================================================  ============================
package     the PyPI ``tzdata`` package (a dependency; default)   ``tzdata.IANA_VERSION``
system      the first existing directory of ``zoneinfo.TZPATH``   its ``tzdata.zi`` (``+VERSION``)
            (``PYTHONTZPATH`` changes it; Debian: /usr/share/...)
PATH        a zoneinfo directory (TZif files, like the above)      its ``tzdata.zi`` (``+VERSION``)
==========  ====================================================  ============================

``tzdata.zi`` is the single-file form of the database that ``zic``'s Makefile installs next to
the compiled zones; its first line is ``# version 2025b`` (Debian, Alpine, the PyPI package);
macOS has ``+VERSION`` instead. A source whose version cannot be read is refused: a node must
be able to say which rules it uses (:mod:`peerd.coord.tzdata` makes the cluster agree on one).

Zones are loaded lazily (``ZoneInfo.from_file``) and cached per name. Each first load re-reads
the source's version, so a database upgraded under a running node (``pip install -U tzdata``)
is refused until the node restarts, instead of mixing two releases in one process.

*Zone-dependent* schedules (:func:`zone_dependent`) are the ones tzdata can move: ``cron`` in a
zone that is not a fixed UTC offset. ``every`` and ``at`` are UTC instants, and the UTC aliases
and ``Etc/GMT±N`` zones are fixed offsets that no release changes.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

PACKAGE = "package"
SYSTEM = "system"
PATH = "path"
SOURCES = (PACKAGE, SYSTEM)
"""The named sources; any other ``--tzdata`` value is a directory (source :data:`PATH`)."""

UTC_NAMES = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu"}
)
"""Zone names that are UTC itself: :data:`datetime.UTC`, never read from a database."""

VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,31}$")
"""An acceptable version label: IANA's ``2026f``, or a distributor's own (``2026f-custom``)."""
_IANA_RE = re.compile(r"^(\d{4})([a-z]+)$")
_FIXED_RE = re.compile(r"^(Etc/)?(UTC|UCT|Universal|Zulu|Greenwich|GMT0?|GMT[+-](0|[1-9]|1[0-4]))$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
_HEADER_BYTES = 256


def version_key(version: str) -> tuple[int, int, int, str]:
    """Sort key: IANA releases by year, then letters (``2026f < 2026g < 2026za < 2027a``);
    other labels sort before every IANA release, among themselves by text."""
    m = _IANA_RE.match(version)
    if m is None:
        return (0, 0, 0, version)
    return (1, int(m.group(1)), len(m.group(2)), m.group(2))


def check_version(version: str, field: str) -> str:
    """``version`` stripped, if it is a valid label (:data:`VERSION_RE`).

    Raises:
        InvalidArgument: naming ``field``: ``"'20 26' is not a tzdata version (e.g. 2026f)"``.
    """
    text = version.strip()
    if not VERSION_RE.match(text):
        raise InvalidArgument(field, f"{version[:40]!r} is not a tzdata version (e.g. 2026f)")
    return text


def fixed_offset_zone(name: str) -> bool:
    """Whether ``name`` ("" = UTC) is a fixed UTC offset no tzdata release changes."""
    return not name or name in UTC_NAMES or _FIXED_RE.match(name) is not None


def zone_dependent(schedule: pb.Schedule) -> bool:
    """Whether the slots of ``schedule`` depend on tzdata: a ``cron`` schedule (not
    ``@every``) in a zone that is not a fixed offset (:func:`fixed_offset_zone`). Cheap: the
    ownership filter calls it per task and member."""
    if schedule.WhichOneof("kind") != "cron" or fixed_offset_zone(schedule.time_zone):
        return False
    return schedule.cron.lstrip()[:6].lower() != "@every"


def read_version(root: Traversable) -> str | None:
    """The version a zoneinfo directory declares: the ``# version X`` first line of its
    ``tzdata.zi``, else the content of ``+VERSION``; None when neither says (or is valid)."""
    for name, prefix in (("tzdata.zi", "# version "), ("+VERSION", "")):
        entry = root.joinpath(name)
        try:
            if not entry.is_file():
                continue
            with entry.open("rb") as f:
                head = f.read(_HEADER_BYTES).decode("ascii", "replace").splitlines()
        except OSError:
            continue
        if head and head[0].startswith(prefix):
            text = head[0][len(prefix) :].strip()
            if VERSION_RE.match(text):
                return text
    return None


@dataclass(eq=False)
class TimeZoneRules:
    """One node's (or one CLI process's) time-zone rules. Build with :meth:`load`.

    Attributes:
        source: :data:`PACKAGE`, :data:`SYSTEM` or :data:`PATH`.
        location: the directory zones are read from (shown by ``peerd version``).
        version: the database's version, e.g. ``"2026f"``.
        root: that directory as a :class:`Traversable` (a ``Path`` for an installed package).
        declared: what the directory itself declared when loaded (:func:`read_version`; the
            package's ``tzdata.zi`` too), checked again before each zone is first read.
    """

    source: str
    location: str
    version: str
    root: Traversable
    declared: str | None = None
    _zones: dict[str, tzinfo | None] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, setting: str, tzpath: Sequence[str] | None = None) -> TimeZoneRules:
        """The rules of ``setting``: ``"package"``, ``"system"`` or a directory path.

        Args:
            setting: the ``--tzdata`` value.
            tzpath: the directories ``system`` searches (default ``zoneinfo.TZPATH``).

        Raises:
            InvalidArgument: naming ``--tzdata``: the package is not installed, no system
                database or no such directory, or its version cannot be read.
        """
        text = setting.strip()
        if text.lower() == PACKAGE:
            try:
                import tzdata  # type: ignore[import-untyped]
            except ImportError:
                raise InvalidArgument(
                    "--tzdata",
                    "the tzdata package is not installed (pip install tzdata), or use "
                    "--tzdata system",
                ) from None
            root = files("tzdata").joinpath("zoneinfo")
            version = check_version(str(tzdata.IANA_VERSION), "--tzdata")
            return cls(PACKAGE, str(root), version, root, read_version(root))
        if text.lower() == SYSTEM:
            dirs = list(zoneinfo.TZPATH if tzpath is None else tzpath)
            found = next((Path(d) for d in dirs if Path(d).is_dir()), None)
            if found is None:
                raise InvalidArgument(
                    "--tzdata",
                    f"no system time-zone database: none of {dirs} exists (zoneinfo.TZPATH, "
                    "PYTHONTZPATH); use --tzdata package",
                )
            return cls._directory(SYSTEM, found)
        if not text:
            raise InvalidArgument("--tzdata", "must be package, system or a directory")
        path = Path(text).expanduser()
        if not path.is_dir():
            raise InvalidArgument(
                "--tzdata", f"{text!r} is not a directory (expected package, system or a path)"
            )
        return cls._directory(PATH, path)

    @classmethod
    def _directory(cls, source: str, path: Path) -> TimeZoneRules:
        version = read_version(path)
        if version is None:
            raise InvalidArgument(
                "--tzdata",
                f"cannot tell the tzdata version of {path}: it has no tzdata.zi ('# version "
                "...' first line) or +VERSION file; use --tzdata package",
            )
        return cls(source, str(path), version, path, version)

    @property
    def where(self) -> str:
        """How nodes publish the source (``Member.tzdata_source``): ``package``, ``system`` or
        the directory."""
        return self.location if self.source == PATH else self.source

    def describe(self) -> str:
        """``"2026f (package)"``, ``"2025b (system /usr/share/zoneinfo)"``."""
        where = self.source if self.source == PACKAGE else f"{self.source} {self.location}"
        return f"{self.version} ({where})"

    def zone(self, name: str, field: str) -> tzinfo:
        """The zone ``name`` ("" and the UTC aliases: :data:`datetime.UTC`) from this source.

        Raises:
            InvalidArgument: naming ``field``: ``"unknown time zone 'Mars/Olympus' (tzdata
                2026f, package)"``, or the database changed under this process (restart).
        """
        name = name or "UTC"
        if name in UTC_NAMES:
            return UTC
        try:
            zone = self._zones[name]
        except KeyError:
            zone = self._zones[name] = self._read(name, field)
        if zone is None:
            raise InvalidArgument(
                field, f"unknown time zone {name!r} (tzdata {self.version}, {self.source})"
            )
        return zone

    def _read(self, name: str, field: str) -> tzinfo | None:
        if len(name) > 255 or not _KEY_RE.match(name):
            return None
        entry = self.root.joinpath(*name.split("/"))
        try:
            if not entry.is_file():
                return None
            with entry.open("rb") as f:
                zone = zoneinfo.ZoneInfo.from_file(f, key=name)
        except (OSError, ValueError):  # not a TZif file (zone.tab, a directory, ...)
            return None
        now = read_version(self.root)
        if now != self.declared:
            raise InvalidArgument(
                field,
                f"the time-zone database at {self.location} changed from {self.version} to "
                f"{now or 'an unknown version'} since this process started; restart it",
            )
        return zone


__all__ = [
    "PACKAGE",
    "PATH",
    "SOURCES",
    "SYSTEM",
    "UTC_NAMES",
    "VERSION_RE",
    "TimeZoneRules",
    "check_version",
    "fixed_offset_zone",
    "read_version",
    "version_key",
    "zone_dependent",
]
