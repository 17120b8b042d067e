"""import-crontab reads the file, not only its path: system or user format from the content, on
every file Debian ships in /etc/cron.d (copied outside /etc), and the CLI around it (pure)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from peerd import cli
from peerd.core.crontab import parse_crontab
from peerd.core.crontab_format import (
    EITHER,
    NO_HINTS,
    SYSTEM,
    USER,
    HostHints,
    detect_format,
    read_line,
)
from tests.helpers import RULES

DATA = Path(__file__).resolve().parents[1] / "data" / "cron.d"
DEBIAN_FILES = sorted(p.name for p in DATA.iterdir() if p.name != "README.md")
USERS = {"munin": {"munin", "www-data"}, "logcheck": {"logcheck"}}
"""The user column of each Debian file (root unless listed)."""
REBOOT_LINES = {"logcheck": 1}
"""@reboot entries (not convertible) per file."""


@pytest.mark.parametrize(
    ("line", "reading"),
    [
        ("0 * * * * /usr/bin/report --weekly", USER),  # 1: not a user name
        ("0 * * * * Root x", USER),  # 1: user names are lower case
        ("0 * * * * backup.sh", USER),  # 2: nothing follows
        ("@daily cleanup --old", USER),  # 3: an option follows
        ("0 * * * * deploy > /tmp/log", USER),  # 3: shell syntax follows
        ("0 * * * * test -x /a && /a", USER),  # 4: shell builtin
        ("0 * * * * cd /srv && make", USER),  # 4
        ("0 * * * * nice /usr/bin/x", USER),  # 5: a known command
        ("0 * * * * env FOO=1 /usr/bin/x", USER),  # 5, although an assignment follows
        ("0 * * * * root mycommand", SYSTEM),  # 6: a known account
        ("0 * * * * ntpsec [ -x /x ] && /x", SYSTEM),  # 7: a command line begins
        ("@hourly logcheck if [ -x /l ]; then /l; fi", SYSTEM),  # 7
        ("0 * * * * munin htmldir=$(cat f); ls", SYSTEM),  # 7: an assignment, then more
        ("0 * * * * deploy cd /srv && make", SYSTEM),  # 7: cd DIR
        ("0 * * * * deploy test -e /x || /y", SYSTEM),  # 7: test -...
        ("0 * * * * backup nightly", EITHER),  # 8
        ("0 * * * * deploy test", EITHER),  # 8: 'test' as an argument
        ("0 * * * * myscript /data", EITHER),  # 8: a path may be an argument
    ],
)
def test_line_readings(line: str, reading: str) -> None:
    result = read_line(line, "/usr/bin:/bin", NO_HINTS)
    assert result is not None and result[0] == reading, result


def test_a_line_without_a_word_after_its_schedule_has_no_reading() -> None:
    assert read_line("0 * * * *", "/usr/bin:/bin") is None
    assert detect_format("0 * * * *\n").system is False  # no reading: nothing to go on


def test_host_hints_decide_a_word_that_reads_either_way() -> None:
    line = "0 * * * * backup nightly"
    accounts = HostHints(is_account=lambda name: name == "backup")
    commands = HostHints(is_command=lambda name, path: name == "backup" and "/opt/bin" in path)
    assert read_line(line, "/usr/bin", accounts) == (
        SYSTEM,
        "'backup' is a user account on this host",
    )
    assert read_line(line, "/opt/bin:/usr/bin", commands) == (USER, "'backup' is a command")
    assert read_line(line, "/usr/bin", commands)[0] == EITHER  # type: ignore[index]
    # the PATH a crontab sets is the one searched
    text = f"PATH=/opt/bin:/usr/bin\n{line}\n"
    assert detect_format(text, commands).system is False


def test_file_decisions() -> None:
    system = detect_format("MAILTO=x\n0 * * * * root /a\n0 1 * * * deploy nightly\n")
    assert system.system is True and "line 2: 'root' is a user account" in system.why
    user = detect_format("0 * * * * /usr/bin/a\n@daily backup nightly\n")
    assert user.system is False and "line 1: '/usr/bin/a' is not a user name" in user.why
    mixed = detect_format("0 * * * * root /a\n# c\n0 * * * * /usr/bin/a\n@daily x y\n")
    assert mixed.system is None
    assert [(r.line_no, r.reading) for r in mixed.ambiguous] == [(1, SYSTEM), (3, USER)]
    either = detect_format("@daily backup nightly\n@weekly backup weekly\n")
    assert either.system is None and [r.line_no for r in either.ambiguous] == [1, 2]
    empty = detect_format("# nothing\nSHELL=/bin/sh\n")
    assert (empty.system, empty.readings) == (False, [])


@pytest.mark.parametrize("name", DEBIAN_FILES)
def test_every_debian_cron_d_file_reads_as_system_format(name: str) -> None:
    text = (DATA / name).read_text()
    guess = detect_format(text, NO_HINTS)
    parsed = parse_crontab(text, system=True, rules=RULES)
    if name == ".placeholder":
        assert (guess.system, parsed.entries, parsed.errors) == (False, [], [])
        return
    assert guess.system is True, guess
    assert {r.reading for r in guess.readings} == {SYSTEM}
    assert len(parsed.errors) == REBOOT_LINES.get(name, 0)
    assert all("@reboot" in e.reason for e in parsed.errors)
    assert parsed.entries
    assert {e.user for e in parsed.entries} == USERS.get(name, {"root"})
    for e in parsed.entries:  # the user column never leaks into the command
        assert e.command.split()[0] not in USERS.get(name, {"root"}), e


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--server", "127.0.0.1:9", *argv], env={})
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", [n for n in DEBIAN_FILES if n != ".placeholder"])
def test_dry_run_of_every_debian_file_outside_etc_shows_the_user_column(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    copy = tmp_path / name
    shutil.copy(DATA / name, copy)
    code, out, err = run(capsys, "import-crontab", str(copy), "--dry-run", "--skip-invalid")
    assert code == cli.EXIT_OK, err
    first, header, *rows = out.splitlines()
    assert first.startswith("format: system (user column), detected from its content: "), first
    assert header.split() == ["ID", "SCHEDULE", "TZ", "USER", "COMMAND"]
    users = USERS.get(name, {"root"})
    tasks = [re.split(r"\s{2,}", r) for r in rows if not r.startswith("dry run:")]
    assert len(tasks) == len(
        parse_crontab((DATA / name).read_text(), system=True, rules=RULES).entries
    )
    for _, _, tz, user, command in tasks:
        assert (tz, user in users) == ("UTC", True)
        assert command.split()[0] not in users  # the user column is not part of the command


def test_ambiguous_file_lists_its_lines_and_imports_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = tmp_path / "jobs"
    f.write_text("0 * * * * root /usr/bin/a\n0 2 * * * /usr/bin/b --x\n")
    code, out, err = run(capsys, "import-crontab", str(f), "--dry-run")
    assert (code, out) == (cli.EXIT_INVALID, "")
    lines = err.splitlines()
    assert lines[0] == (
        "line 1 reads as system format: 'root' is a user account: 0 * * * * root /usr/bin/a"
    )
    assert lines[1] == (
        "line 2 reads as user format: '/usr/bin/b' is not a user name: 0 2 * * * /usr/bin/b --x"
    )
    assert lines[2].startswith(f"peerd: error: {f}: cannot tell whether it is a system crontab")
    assert lines[2].endswith("(pass --system or --user-format)")
    code, out, err = run(capsys, "import-crontab", str(f), "--dry-run", "--system")
    assert code == cli.EXIT_INVALID
    assert "line 2: the user column '/usr/bin/b' is not a user name" in err
    code, out, err = run(capsys, "import-crontab", str(f), "--dry-run", "--user-format")
    assert code == cli.EXIT_OK and out.startswith("format: user (no user column), as --user-format")
