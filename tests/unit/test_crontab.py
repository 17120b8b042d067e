"""crontab files: Debian /etc/crontab and /etc/cron.d files, env, CRON_TZ, %, errors (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from peerd.core.crontab import (
    CrontabEntry,
    CrontabError,
    looks_like_system_crontab,
    parse_crontab,
)
from peerd.core.schedule import CompiledSchedule, ScheduleSpec
from tests.helpers import RULES

DEBIAN_CRONTAB = (
    "# /etc/crontab: system-wide crontab\n"
    "# Unlike any other crontab you don't have to run the `crontab'\n"
    "# command to install the new version when you edit this file\n"
    "\n"
    "SHELL=/bin/sh\n"
    "PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin\n"
    "\n"
    "# Example of job definition:\n"
    "# .---------------- minute (0 - 59)\n"
    "# |  .------------- hour (0 - 23)\n"
    "# |  |  .---------- day of month (1 - 31)\n"
    "# |  |  |  .------- month (1 - 12) OR jan,feb,mar,apr ...\n"
    "# |  |  |  |  .---- day of week (0 - 6) (Sunday=0 or 7) OR sun,mon,tue,wed,thu,fri,sat\n"
    "# |  |  |  |  |\n"
    "# *  *  *  *  * user-name command to be executed\n"
    "17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly\n"
    "25 6\t* * *\troot\t"
    "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }\n"
    "47 6\t* * 7\troot\t"
    "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }\n"
    "52 6\t1 * *\troot\t"
    "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }\n"
    "#\n"
)
DEBIAN_ENV = {
    "SHELL": "/bin/sh",
    "PATH": "/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin",
}

CRON_D = (
    "# /etc/cron.d/e2scrub_all\n"
    "30 3 * * 0 root test -e /run/systemd/system || SERVICE_MODE=1 "
    "/usr/lib/x86_64-linux-gnu/e2fsprogs/e2scrub_all_cron\n"
    "10 3 * * * root test -e /run/systemd/system || SERVICE_MODE=1 /sbin/e2scrub_all -A -r\n"
    "# /etc/cron.d/php\n"
    "09,39 *     * * *     root   "
    "[ -x /usr/lib/php/sessionclean ] && if [ ! -d /run/systemd/system ]; then "
    "/usr/lib/php/sessionclean; fi\n"
)


def test_debian_etc_crontab() -> None:
    parsed = parse_crontab(DEBIAN_CRONTAB, system=True, rules=RULES)
    assert parsed.errors == []
    assert parsed.entries == [
        CrontabEntry(
            16, "17 * * * *", "cd / && run-parts --report /etc/cron.hourly", "root", DEBIAN_ENV
        ),
        CrontabEntry(
            17,
            "25 6 * * *",
            "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }",
            "root",
            DEBIAN_ENV,
        ),
        CrontabEntry(
            18,
            "47 6 * * 7",
            "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }",
            "root",
            DEBIAN_ENV,
        ),
        CrontabEntry(
            19,
            "52 6 1 * *",
            "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }",
            "root",
            DEBIAN_ENV,
        ),
    ]
    # what the crontab accepts, the scheduler runs: 47 6 * * 7 is Sunday 06:47
    weekly = CompiledSchedule(ScheduleSpec(cron=parsed.entries[2].schedule), RULES)
    assert weekly.next_after(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        2026, 1, 4, 6, 47, tzinfo=UTC
    )


def test_cron_d_file() -> None:
    parsed = parse_crontab(CRON_D, system=True, rules=RULES)
    assert parsed.errors == []
    assert [(e.line_no, e.schedule, e.user) for e in parsed.entries] == [
        (2, "30 3 * * 0", "root"),
        (3, "10 3 * * *", "root"),
        (5, "09,39 * * * *", "root"),
    ]
    assert parsed.entries[1].command == (
        "test -e /run/systemd/system || SERVICE_MODE=1 /sbin/e2scrub_all -A -r"
    )
    assert parsed.entries[2].command == (
        "[ -x /usr/lib/php/sessionclean ] && if [ ! -d /run/systemd/system ]; "
        "then /usr/lib/php/sessionclean; fi"
    )
    assert all(e.env == {} and e.stdin is None and e.time_zone is None for e in parsed.entries)


def test_user_crontab_has_no_user_column() -> None:
    parsed = parse_crontab(
        "0 9 * jan mon  /usr/bin/report --weekly\n@daily backup.sh\n", system=False, rules=RULES
    )
    assert parsed.errors == []
    assert [(e.schedule, e.command, e.user) for e in parsed.entries] == [
        ("0 9 * jan mon", "/usr/bin/report --weekly", None),
        ("@daily", "backup.sh", None),
    ]


def test_env_lines_apply_below_and_quotes_are_stripped() -> None:
    text = (
        "MAILTO=''\n"
        '  GREETING = "hello world"  \n'
        "* * * * * echo one\n"
        "GREETING='bye'\n"
        "HOME=/srv/x\n"
        "* * * * * echo two\n"
    )
    entries = parse_crontab(text, system=False, rules=RULES).entries
    assert entries[0].env == {"MAILTO": "", "GREETING": "hello world"}
    assert entries[1].env == {"MAILTO": "", "GREETING": "bye", "HOME": "/srv/x"}


def test_cron_tz_and_tz() -> None:
    text = (
        "TZ=Europe/Berlin\n"
        "0 9 * * * a\n"
        "CRON_TZ=America/New_York\n"
        "0 9 * * * b\n"
        "CRON_TZ=Mars/Olympus\n"
        "0 9 * * * c\n"
    )
    parsed = parse_crontab(text, system=False, rules=RULES)
    assert [(e.command, e.time_zone) for e in parsed.entries] == [
        ("a", "Europe/Berlin"),
        ("b", "America/New_York"),
    ]
    assert parsed.entries[1].env["CRON_TZ"] == "America/New_York"
    assert parsed.errors == [
        CrontabError(
            6,
            "0 9 * * * c",
            f"CRON_TZ: unknown time zone 'Mars/Olympus' (tzdata {RULES.version}, package)",
        )
    ]


@pytest.mark.parametrize(
    ("command", "cmd", "stdin"),
    [
        ("echo hi", "echo hi", None),
        ("mail -s report root%line one%line two", "mail -s report root", "line one\nline two"),
        ("date +\\%Y-\\%m-\\%d", "date +%Y-%m-%d", None),
        ("cat%100\\% done%", "cat", "100% done\n"),
        ("printf 'a\\tb'%x\\y", "printf 'a\\tb'", "x\\y"),
        ("echo \\\\%in", "echo \\\\", "in"),
        ("true%", "true", ""),
    ],
)
def test_percent_is_stdin(command: str, cmd: str, stdin: str | None) -> None:
    (entry,) = parse_crontab(f"* * * * * {command}\n", system=False, rules=RULES).entries
    assert (entry.command, entry.stdin) == (cmd, stdin)


@pytest.mark.parametrize(
    ("line", "system", "reason"),
    [
        ("@reboot /usr/bin/start", False, "@reboot has no schedule slot; not convertible"),
        ("@reboot root /usr/bin/start", True, "@reboot has no schedule slot; not convertible"),
        ("@fortnightly x", False, "unknown descriptor '@fortnightly'"),
        ("@every 10s x", False, "@every is not crontab syntax"),
        ("* * * * ", False, "expected 5 time fields and a command, got 4 fields"),
        ("* * * * * root", True, "expected 5 time fields, a user and a command, got 6 fields"),
        ("@daily root", True, "expected a descriptor, a user and a command, got 2 fields"),
        ("* 25 * * * x", False, "'* 25 * * *': hour 25 out of range 0-23"),
        ("61 * * * * x", False, "minute 61 out of range 0-59"),
        ("0 0 * * funday x", False, "invalid day of week value 'funday'"),
        ("0 0 31 2 * x", False, "never fires"),
        ("0 0 L * * x", False, "invalid day of month value 'L'"),
    ],
)
def test_errors(line: str, system: bool, reason: str) -> None:
    parsed = parse_crontab(f"# header\n{line}\n", system=system, rules=RULES)
    assert parsed.entries == []
    (err,) = parsed.errors
    assert (err.line_no, err.line) == (2, line)
    assert reason in err.reason


def test_good_and_bad_lines_mixed() -> None:
    parsed = parse_crontab("@reboot x\n*/5 * * * * ok\n", system=False, rules=RULES)
    assert [e.line_no for e in parsed.entries] == [2]
    assert [e.line_no for e in parsed.errors] == [1]


def test_every_accepted_schedule_compiles() -> None:
    text = "@hourly a\n@annually b\n*/10 1-5 * * mon-fri c\n0 0 1,15 jan-jun * d\n5/10 * * * 0 e\n"
    parsed = parse_crontab(text, system=False, rules=RULES)
    assert parsed.errors == []
    for e in parsed.entries:
        CompiledSchedule(ScheduleSpec(cron=e.schedule), RULES).next_after(
            datetime(2026, 1, 1, tzinfo=UTC)
        )


@pytest.mark.parametrize(
    ("path", "system"),
    [
        ("/etc/crontab", True),
        ("/etc/cron.d/e2scrub_all", True),
        ("/etc/cron.d//php", True),
        ("/etc/cron.d", False),
        ("/etc/cron.daily/logrotate", False),
        ("/var/spool/cron/crontabs/alice", False),
        ("crontab.txt", False),
    ],
)
def test_looks_like_system_crontab(path: str, system: bool) -> None:
    assert looks_like_system_crontab(path) is system
