"""Every setting of a node, defined once: the fields of :class:`NodeConfig`.

Each field is one setting (:func:`peerd.settings.setting`): its flag, environment variable, TOML
key (the field name), type, unit, default, bounds and whether SIGHUP reloads it. The ``serve``
flags, :data:`RELOADABLE`, validation and ``docs/configuration.md`` are derived from
:data:`SETTINGS`; :mod:`peerd.config` builds a :class:`NodeConfig` from flags, environment and
file. A new node setting is one field here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from peerd.config_kinds import OTEL_ENDPOINT, SECRETS_FILE, TARGET_RULES, TZDATA_SOURCE
from peerd.core.tzrules import PACKAGE
from peerd.settings import (
    BOOLEAN,
    DURATION,
    GLOB_LIST,
    HOSTPORT,
    HOSTPORT_LIST,
    INTEGER,
    LABELS,
    NUMBER,
    OPTIONAL_FILE,
    OPTIONAL_HOSTPORT,
    SECONDS,
    TEXT,
    WHOLE_SECONDS,
    choice,
    matching,
    setting,
    settings_of,
)

NODE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
CLUSTER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MIN_LEASE_TTL_S = 2
MAX_HTTP_IN_FLIGHT = 256
"""Upper bound of ``max_http_runs``: :data:`peerd.runner.http.MAX_IN_FLIGHT` (kept equal by a
test), the HTTP client's connection limit."""
MAX_CLAIM_BATCH = 127
"""Upper bound of ``claim_batch``: etcd's default ``--max-txn-ops`` is 128 operations per
transaction, and a claim batch is one outer transaction of nested ones
(:mod:`peerd.coord.ledger`)."""
MIN_MESSAGE_SIZE = 64 * 1024
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
DEFAULT_LISTEN = "127.0.0.1:7070"
DEFAULT_ETCD = "127.0.0.1:2379"


@dataclass(frozen=True)
class NodeConfig:
    """Everything one ``peerd serve`` process needs; each field is one setting (its ``help``
    says what it means). Durations carry their unit in the name (``_s`` = seconds) or are
    ``timedelta``."""

    node_id: str = setting(
        help="Unique name of this node in the cluster.",
        flag="--node-id",
        env="PEERD_NODE_ID",
        kind=matching(NODE_ID_RE, "ID"),
    )
    listen: str = setting(
        DEFAULT_LISTEN,
        help="HOST:PORT the gRPC server binds (public API and peer traffic).",
        flag="--listen",
        env="PEERD_LISTEN",
        kind=HOSTPORT,
    )
    advertise: str = setting(
        "",
        help="HOST:PORT other nodes and clients dial; empty: the --listen address.",
        flag="--advertise",
        env="PEERD_ADVERTISE",
        kind=OPTIONAL_HOSTPORT,
    )
    etcd: tuple[str, ...] = setting(
        (DEFAULT_ETCD,),
        help="etcd client endpoints, comma-separated; the client fails over between them.",
        flag="--etcd",
        env="PEERD_ETCD",
        kind=HOSTPORT_LIST,
    )
    cluster: str = setting(
        "default",
        help="Cluster name; all keys live under /peerd/<cluster>/.",
        flag="--cluster",
        env="PEERD_CLUSTER",
        kind=matching(CLUSTER_RE, "NAME"),
    )
    labels: tuple[str, ...] = setting(
        (),
        help="Labels of this node (Kubernetes syntax), published in its member key; a task's "
        "node selector picks the nodes that may run it. Repeat the flag; separate with , in the "
        "environment; a table in the file. Changing them takes a restart.",
        flag="--label",
        env="PEERD_LABELS",
        kind=LABELS,
    )
    lease_ttl_s: int = setting(
        10,
        help="Membership lease TTL; keepalives are sent every TTL/3.",
        flag="--lease-ttl",
        env="PEERD_LEASE_TTL",
        kind=WHOLE_SECONDS,
        unit="s",
        minimum=MIN_LEASE_TTL_S,
    )
    allow_shell: tuple[str, ...] = setting(
        (),
        help="Glob patterns (fnmatch) matched against the shlex-joined argv of shell tasks; "
        "none: the shell executor is off. Repeat the flag; separate with ; in the environment.",
        flag="--allow-shell",
        env="PEERD_ALLOW_SHELL",
        kind=GLOB_LIST,
        reloadable=True,
    )
    http_allow: tuple[str, ...] = setting(
        (),
        help="HTTP targets this node may call: URL patterns (https://*.example.com/*), host "
        "patterns (*.example.com), CIDRs or loopback/private/link-local; none: any target "
        "not denied. URL/host rules and CIDRs are separate layers a target must both pass "
        "(docs/security.md). Repeat the flag; separate with ; in the environment.",
        flag="--http-allow",
        env="PEERD_HTTP_ALLOW",
        kind=TARGET_RULES,
        reloadable=True,
    )
    http_deny: tuple[str, ...] = setting(
        (),
        help="HTTP targets this node refuses (same forms as --http-allow; deny wins), on top of "
        "the built-in denies of link-local and cloud metadata addresses (169.254.0.0/16, "
        "fe80::/10, fd00:ec2::254). Checked on create and on every address a name resolves "
        "to when a run connects.",
        flag="--http-deny",
        env="PEERD_HTTP_DENY",
        kind=TARGET_RULES,
        reloadable=True,
    )
    secrets_file: str = setting(
        "",
        help='TOML file of secrets (NAME = "value") that tasks refer to by name '
        "(--header-secret, --env-secret); looked up before the PEERD_SECRET_<NAME> environment "
        "variables, re-read when it changes. Empty: environment only.",
        flag="--secrets-file",
        env="PEERD_SECRETS_FILE",
        kind=SECRETS_FILE,
        reloadable=True,
    )
    max_message_size: int = setting(
        4 * 1024 * 1024,
        help="Largest gRPC request this node accepts; a larger one is refused with "
        "RESOURCE_EXHAUSTED before it is parsed.",
        flag="--max-message-size",
        env="PEERD_MAX_MESSAGE_SIZE",
        kind=INTEGER,
        unit="bytes",
        minimum=MIN_MESSAGE_SIZE,
        maximum=MAX_MESSAGE_SIZE,
        bound_reason="64 MiB",
    )
    api_rate_limit: float = setting(
        100.0,
        help="Public API requests per second one caller may make (a token bucket per "
        "principal, --api-burst deep); more answer RESOURCE_EXHAUSTED. 0: no limit.",
        flag="--api-rate-limit",
        env="PEERD_API_RATE_LIMIT",
        kind=NUMBER,
        unit="requests/s",
        minimum=0.0,
        reloadable=True,
    )
    api_burst: int = setting(
        200,
        help="Requests one caller may make at once before --api-rate-limit applies.",
        flag="--api-burst",
        env="PEERD_API_BURST",
        kind=INTEGER,
        unit="requests",
        minimum=1,
        reloadable=True,
    )
    misfire_threshold: timedelta = setting(
        timedelta(seconds=5),
        help="A slot later than this when planned is a misfire: of a run of misfires only the "
        "most recent fires, the others are recorded SKIPPED (tasks may set their own).",
        flag="--misfire-threshold",
        env="PEERD_MISFIRE_THRESHOLD",
        kind=DURATION,
        minimum=timedelta(0),
        reloadable=True,
    )
    claim_ahead: timedelta = setting(
        timedelta(milliseconds=300),
        help="Slots of tasks without an overlap lock are claimed this long before they fire "
        "(batched, so a claim's etcd latency is not lateness); 0 claims at the fire instant. "
        "Cost: slots a node claimed ahead and did not start before it died run one lease TTL "
        "late on a survivor (docs/reliability.md).",
        flag="--claim-ahead",
        env="PEERD_CLAIM_AHEAD",
        kind=DURATION,
        minimum=timedelta(0),
        maximum=timedelta(seconds=5),
        bound_reason="a claimed run waits in memory until its fire instant",
    )
    tzdata: str = setting(
        PACKAGE,
        help="Time-zone rules (tzdata) this node computes cron slots with: package (the PyPI "
        "tzdata package, upgraded with pip), system (the host's zoneinfo directory, "
        "zoneinfo.TZPATH) or a zoneinfo directory. Only nodes running the cluster's agreed "
        "version own tasks whose slots depend on it (docs/scheduling.md).",
        flag="--tzdata",
        env="PEERD_TZDATA",
        kind=TZDATA_SOURCE,
    )
    runs_keep: int = setting(
        100,
        help="Run records kept per task; older ones are deleted.",
        flag="--runs-keep",
        env="PEERD_RUNS_KEEP",
        kind=INTEGER,
        unit="records",
        minimum=1,
        reloadable=True,
    )
    runs_max_age: timedelta = setting(
        timedelta(days=7),
        help="Run records older than this are deleted (besides the --runs-keep limit).",
        flag="--runs-max-age",
        env="PEERD_RUNS_MAX_AGE",
        kind=DURATION,
        minimum=timedelta(minutes=1),
        reloadable=True,
    )
    max_concurrent_runs: int = setting(
        512,
        help="Executions running at once on this node; further claimed runs wait (lateness grows).",
        flag="--max-concurrent-runs",
        env="PEERD_MAX_CONCURRENT_RUNS",
        kind=INTEGER,
        unit="runs",
        minimum=1,
        reloadable=True,
    )
    max_http_runs: int = setting(
        256,
        help="HTTP executions running at once on this node (within --max-concurrent-runs).",
        flag="--max-http-runs",
        env="PEERD_MAX_HTTP_RUNS",
        kind=INTEGER,
        unit="runs",
        minimum=1,
        maximum=MAX_HTTP_IN_FLIGHT,
        bound_reason="the HTTP client's requests in flight per node",
        reloadable=True,
    )
    max_shell_runs: int = setting(
        32,
        help="Shell executions (child processes) running at once on this node.",
        flag="--max-shell-runs",
        env="PEERD_MAX_SHELL_RUNS",
        kind=INTEGER,
        unit="runs",
        minimum=1,
        reloadable=True,
    )
    max_python_runs: int = setting(
        64,
        help="Python-callable executions running at once on this node.",
        flag="--max-python-runs",
        env="PEERD_MAX_PYTHON_RUNS",
        kind=INTEGER,
        unit="runs",
        minimum=1,
        reloadable=True,
    )
    catch_up_rate: float = setting(
        50.0,
        help="Cluster-wide cap on replays of missed slots (catch-up run-all), shared by the live "
        "nodes.",
        flag="--catch-up-rate",
        env="PEERD_CATCH_UP_RATE",
        kind=NUMBER,
        unit="slots/s",
        exclusive_minimum=0.0,
        reloadable=True,
    )
    drain_grace_s: float = setting(
        30.0,
        help="On SIGTERM, time running executions get to finish after the node handed its "
        "tasks over; then the lease is revoked and the process exits 0.",
        flag="--drain-grace",
        env="PEERD_DRAIN_GRACE",
        kind=SECONDS,
        unit="s",
        minimum=0.0,
        reloadable=True,
    )
    claim_batch: int = setting(
        64,
        help="Slots claimed per etcd transaction (nested transactions, one per slot).",
        flag="--claim-batch",
        env="PEERD_CLAIM_BATCH",
        kind=INTEGER,
        unit="slots",
        minimum=1,
        maximum=MAX_CLAIM_BATCH,
        bound_reason="etcd's 128 operations per txn",
    )
    etcd_compaction_interval: timedelta = setting(
        timedelta(minutes=5),
        help="How often one node compacts etcd's history; 0 turns peerd's compaction and its "
        "NOSPACE recovery off (etcd compacted by its own --auto-compaction-* or an operator; "
        "docs/operations.md).",
        flag="--etcd-compaction-interval",
        env="PEERD_ETCD_COMPACTION_INTERVAL",
        kind=DURATION,
        minimum=timedelta(0),
        reloadable=True,
    )
    etcd_compaction_retention: timedelta = setting(
        timedelta(minutes=5),
        help="peerd compacts to a revision at least this old: the history a watcher has to "
        "catch up in before it re-lists.",
        flag="--etcd-compaction-retention",
        env="PEERD_ETCD_COMPACTION_RETENTION",
        kind=DURATION,
        minimum=timedelta(0),
    )
    tls_cert: str = setting(
        "",
        help="PEM certificate (chain) the node serves its port with, and presents to its peers; "
        "empty: plaintext. Re-read on SIGHUP.",
        flag="--tls-cert",
        env="PEERD_TLS_CERT",
        kind=OPTIONAL_FILE,
    )
    tls_key: str = setting(
        "",
        help="PEM private key of --tls-cert. Re-read on SIGHUP.",
        flag="--tls-key",
        env="PEERD_TLS_KEY",
        kind=OPTIONAL_FILE,
    )
    tls_client_ca: str = setting(
        "",
        help="The cluster CA (PEM): clients must present a certificate it signed (mutual TLS); "
        "Peer calls are taken only from node certificates. Re-read on SIGHUP.",
        flag="--tls-client-ca",
        env="PEERD_TLS_CLIENT_CA",
        kind=OPTIONAL_FILE,
    )
    auth_policy: str = setting(
        "",
        help="Auth policy (TOML): principals, their roles and task scopes (docs/security.md); "
        "empty: every caller may do everything. Re-read on SIGHUP.",
        flag="--auth-policy",
        env="PEERD_AUTH_POLICY",
        kind=OPTIONAL_FILE,
    )
    etcd_cacert: str = setting(
        "",
        help="CA (PEM) that signed etcd's server certificate: talk to etcd over TLS; empty: "
        "plaintext (unless --etcd-cert is given: then the system roots).",
        flag="--etcd-cacert",
        env="PEERD_ETCD_CACERT",
        kind=OPTIONAL_FILE,
    )
    etcd_cert: str = setting(
        "",
        help="Client certificate (PEM) for etcd's --client-cert-auth.",
        flag="--etcd-cert",
        env="PEERD_ETCD_CERT",
        kind=OPTIONAL_FILE,
    )
    etcd_key: str = setting(
        "",
        help="PEM private key of --etcd-cert.",
        flag="--etcd-key",
        env="PEERD_ETCD_KEY",
        kind=OPTIONAL_FILE,
    )
    etcd_user: str = setting(
        "",
        help="etcd user (etcd auth); its password is read from --etcd-password-file.",
        flag="--etcd-user",
        env="PEERD_ETCD_USER",
        kind=TEXT,
    )
    etcd_password_file: str = setting(
        "",
        help="File holding the password of --etcd-user (one line; never give it as a flag).",
        flag="--etcd-password-file",
        env="PEERD_ETCD_PASSWORD_FILE",
        kind=OPTIONAL_FILE,
    )
    http_listen: str = setting(
        "",
        help="HOST:PORT of the HTTP server (Prometheus /metrics, /livez, /readyz, the HTTP/JSON "
        "API under /v1/); empty: off. Port 0 picks a free port (logged as http_listening).",
        flag="--http-listen",
        env="PEERD_HTTP_LISTEN",
        kind=OPTIONAL_HOSTPORT,
    )
    http_tls: bool = setting(
        False,
        help="Serve the HTTP port over HTTPS with --tls-cert (reloaded on SIGHUP). With "
        "--tls-client-ca, /v1/ calls must present a client certificate of that CA, as gRPC "
        "calls must (docs/http-api.md).",
        flag="--http-tls",
        env="PEERD_HTTP_TLS",
        kind=BOOLEAN,
    )
    metrics_per_task: bool = setting(
        False,
        help="Also export per-task series (label task_id) on /metrics: up to 5 series per task "
        "and node, so 10,000 tasks on 3 nodes add up to 150,000 (docs/observability.md).",
        flag="--metrics-per-task",
        env="PEERD_METRICS_PER_TASK",
        kind=BOOLEAN,
    )
    otel_endpoint: str = setting(
        "",
        help="Base URL of an OTLP/HTTP receiver (http://collector:4318) to export spans of "
        "claims, runs and records to (<URL>/v1/traces); empty: off. Needs the otel extra; "
        "OTEL_* variables tune the SDK (docs/observability.md).",
        flag="--otel-endpoint",
        env="PEERD_OTEL_ENDPOINT",
        kind=OTEL_ENDPOINT,
    )
    log_format: str = setting(
        "auto",
        help="Log format; auto: console on a terminal, JSON otherwise.",
        flag="--log-format",
        env="PEERD_LOG_FORMAT",
        kind=choice("auto", "json", "console"),
    )
    log_level: str = setting(
        "info",
        help="Log level (case-insensitive).",
        flag="--log-level",
        env="PEERD_LOG_LEVEL",
        kind=choice("debug", "info", "warning", "error"),
        reloadable=True,
    )

    @property
    def address(self) -> str:
        """The address published in this node's member key."""
        return self.advertise or self.listen

    @property
    def label_map(self) -> dict[str, str]:
        """:attr:`labels` as a mapping (what the member key carries)."""
        return dict(item.split("=", 1) for item in self.labels)

    @property
    def prefix(self) -> str:
        """Key prefix, e.g. ``/peerd/default/``."""
        return f"/peerd/{self.cluster}/"


SETTINGS = settings_of(NodeConfig)
"""Every node setting, in field order: the one table the rest is derived from."""

RELOADABLE = frozenset(s.name for s in SETTINGS if s.reloadable)
"""Fields a running node applies on SIGHUP (:func:`reload_config`); the others need a restart."""
