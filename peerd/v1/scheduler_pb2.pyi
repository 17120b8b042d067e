import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DstNonexistentPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DST_NONEXISTENT_POLICY_UNSPECIFIED: _ClassVar[DstNonexistentPolicy]
    DST_NONEXISTENT_SKIP: _ClassVar[DstNonexistentPolicy]
    DST_NONEXISTENT_SHIFT: _ClassVar[DstNonexistentPolicy]

class DstAmbiguousPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DST_AMBIGUOUS_POLICY_UNSPECIFIED: _ClassVar[DstAmbiguousPolicy]
    DST_AMBIGUOUS_FIRST: _ClassVar[DstAmbiguousPolicy]
    DST_AMBIGUOUS_LAST: _ClassVar[DstAmbiguousPolicy]
    DST_AMBIGUOUS_BOTH: _ClassVar[DstAmbiguousPolicy]

class OverlapPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERLAP_POLICY_UNSPECIFIED: _ClassVar[OverlapPolicy]
    OVERLAP_ALLOW: _ClassVar[OverlapPolicy]
    OVERLAP_FORBID: _ClassVar[OverlapPolicy]
    OVERLAP_REPLACE: _ClassVar[OverlapPolicy]
    OVERLAP_BUFFER_ONE: _ClassVar[OverlapPolicy]

class CatchUpPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CATCH_UP_POLICY_UNSPECIFIED: _ClassVar[CatchUpPolicy]
    CATCH_UP_SKIP: _ClassVar[CatchUpPolicy]
    CATCH_UP_RUN_ONCE: _ClassVar[CatchUpPolicy]
    CATCH_UP_RUN_ALL: _ClassVar[CatchUpPolicy]

class RetryOn(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRY_ON_UNSPECIFIED: _ClassVar[RetryOn]
    RETRY_ON_HTTP_5XX: _ClassVar[RetryOn]
    RETRY_ON_HTTP_429: _ClassVar[RetryOn]
    RETRY_ON_TIMEOUT: _ClassVar[RetryOn]
    RETRY_ON_CONNECTION_ERROR: _ClassVar[RetryOn]
    RETRY_ON_NONZERO_EXIT: _ClassVar[RetryOn]
    RETRY_ON_EXCEPTION: _ClassVar[RetryOn]
    RETRY_ON_HTTP_4XX: _ClassVar[RetryOn]

class OwnerLostPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OWNER_LOST_POLICY_UNSPECIFIED: _ClassVar[OwnerLostPolicy]
    OWNER_LOST_RETRY: _ClassVar[OwnerLostPolicy]
    OWNER_LOST_MARK_LOST: _ClassVar[OwnerLostPolicy]

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    CLAIMED: _ClassVar[RunStatus]
    RUNNING: _ClassVar[RunStatus]
    SUCCEEDED: _ClassVar[RunStatus]
    FAILED: _ClassVar[RunStatus]
    SKIPPED: _ClassVar[RunStatus]
    LOST: _ClassVar[RunStatus]
    CANCELLED: _ClassVar[RunStatus]

class SkipReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SKIP_REASON_UNSPECIFIED: _ClassVar[SkipReason]
    SKIP_MISFIRE: _ClassVar[SkipReason]
    SKIP_CATCH_UP_WINDOW: _ClassVar[SkipReason]
    SKIP_OVERLAP: _ClassVar[SkipReason]
    SKIP_PAUSED: _ClassVar[SkipReason]
    SKIP_UNSCHEDULABLE: _ClassVar[SkipReason]
DST_NONEXISTENT_POLICY_UNSPECIFIED: DstNonexistentPolicy
DST_NONEXISTENT_SKIP: DstNonexistentPolicy
DST_NONEXISTENT_SHIFT: DstNonexistentPolicy
DST_AMBIGUOUS_POLICY_UNSPECIFIED: DstAmbiguousPolicy
DST_AMBIGUOUS_FIRST: DstAmbiguousPolicy
DST_AMBIGUOUS_LAST: DstAmbiguousPolicy
DST_AMBIGUOUS_BOTH: DstAmbiguousPolicy
OVERLAP_POLICY_UNSPECIFIED: OverlapPolicy
OVERLAP_ALLOW: OverlapPolicy
OVERLAP_FORBID: OverlapPolicy
OVERLAP_REPLACE: OverlapPolicy
OVERLAP_BUFFER_ONE: OverlapPolicy
CATCH_UP_POLICY_UNSPECIFIED: CatchUpPolicy
CATCH_UP_SKIP: CatchUpPolicy
CATCH_UP_RUN_ONCE: CatchUpPolicy
CATCH_UP_RUN_ALL: CatchUpPolicy
RETRY_ON_UNSPECIFIED: RetryOn
RETRY_ON_HTTP_5XX: RetryOn
RETRY_ON_HTTP_429: RetryOn
RETRY_ON_TIMEOUT: RetryOn
RETRY_ON_CONNECTION_ERROR: RetryOn
RETRY_ON_NONZERO_EXIT: RetryOn
RETRY_ON_EXCEPTION: RetryOn
RETRY_ON_HTTP_4XX: RetryOn
OWNER_LOST_POLICY_UNSPECIFIED: OwnerLostPolicy
OWNER_LOST_RETRY: OwnerLostPolicy
OWNER_LOST_MARK_LOST: OwnerLostPolicy
RUN_STATUS_UNSPECIFIED: RunStatus
CLAIMED: RunStatus
RUNNING: RunStatus
SUCCEEDED: RunStatus
FAILED: RunStatus
SKIPPED: RunStatus
LOST: RunStatus
CANCELLED: RunStatus
SKIP_REASON_UNSPECIFIED: SkipReason
SKIP_MISFIRE: SkipReason
SKIP_CATCH_UP_WINDOW: SkipReason
SKIP_OVERLAP: SkipReason
SKIP_PAUSED: SkipReason
SKIP_UNSCHEDULABLE: SkipReason

class Schedule(_message.Message):
    __slots__ = ("cron", "every", "at", "time_zone", "start_at", "end_at", "max_runs", "dst_nonexistent", "dst_ambiguous", "jitter")
    CRON_FIELD_NUMBER: _ClassVar[int]
    EVERY_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    START_AT_FIELD_NUMBER: _ClassVar[int]
    END_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNS_FIELD_NUMBER: _ClassVar[int]
    DST_NONEXISTENT_FIELD_NUMBER: _ClassVar[int]
    DST_AMBIGUOUS_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    cron: str
    every: _duration_pb2.Duration
    at: _timestamp_pb2.Timestamp
    time_zone: str
    start_at: _timestamp_pb2.Timestamp
    end_at: _timestamp_pb2.Timestamp
    max_runs: int
    dst_nonexistent: DstNonexistentPolicy
    dst_ambiguous: DstAmbiguousPolicy
    jitter: _duration_pb2.Duration
    def __init__(self, cron: _Optional[str] = ..., every: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_zone: _Optional[str] = ..., start_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_runs: _Optional[int] = ..., dst_nonexistent: _Optional[_Union[DstNonexistentPolicy, str]] = ..., dst_ambiguous: _Optional[_Union[DstAmbiguousPolicy, str]] = ..., jitter: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "initial_backoff", "max_backoff", "multiplier", "retry_on", "deadline")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    RETRY_ON_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    initial_backoff: _duration_pb2.Duration
    max_backoff: _duration_pb2.Duration
    multiplier: float
    retry_on: _containers.RepeatedScalarFieldContainer[RetryOn]
    deadline: _duration_pb2.Duration
    def __init__(self, max_attempts: _Optional[int] = ..., initial_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., multiplier: _Optional[float] = ..., retry_on: _Optional[_Iterable[_Union[RetryOn, str]]] = ..., deadline: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class HttpTarget(_message.Message):
    __slots__ = ("method", "url", "headers", "body", "header_secrets")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HeaderSecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METHOD_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    HEADER_SECRETS_FIELD_NUMBER: _ClassVar[int]
    method: str
    url: str
    headers: _containers.ScalarMap[str, str]
    body: str
    header_secrets: _containers.ScalarMap[str, str]
    def __init__(self, method: _Optional[str] = ..., url: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., body: _Optional[str] = ..., header_secrets: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PythonTarget(_message.Message):
    __slots__ = ("name", "args_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    args_json: str
    def __init__(self, name: _Optional[str] = ..., args_json: _Optional[str] = ...) -> None: ...

class ShellTarget(_message.Message):
    __slots__ = ("argv", "env", "working_dir", "run_as", "env_secrets")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EnvSecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    RUN_AS_FIELD_NUMBER: _ClassVar[int]
    ENV_SECRETS_FIELD_NUMBER: _ClassVar[int]
    argv: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    working_dir: str
    run_as: str
    env_secrets: _containers.ScalarMap[str, str]
    def __init__(self, argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., working_dir: _Optional[str] = ..., run_as: _Optional[str] = ..., env_secrets: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("id", "schedule", "http", "shell", "python", "timeout", "paused", "description", "created_at", "updated_at", "source", "resumed_at", "on_owner_lost", "overlap", "catch_up", "catch_up_window", "misfire_threshold", "retry", "priority", "on_failure", "pause_note", "labels", "node_selector", "revision", "schedule_since", "previous_schedule", "paused_at")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RESUMED_AT_FIELD_NUMBER: _ClassVar[int]
    ON_OWNER_LOST_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    CATCH_UP_FIELD_NUMBER: _ClassVar[int]
    CATCH_UP_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MISFIRE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    PAUSE_NOTE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NODE_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_SINCE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    schedule: Schedule
    http: HttpTarget
    shell: ShellTarget
    python: PythonTarget
    timeout: _duration_pb2.Duration
    paused: bool
    description: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    source: str
    resumed_at: _timestamp_pb2.Timestamp
    on_owner_lost: OwnerLostPolicy
    overlap: OverlapPolicy
    catch_up: CatchUpPolicy
    catch_up_window: _duration_pb2.Duration
    misfire_threshold: _duration_pb2.Duration
    retry: RetryPolicy
    priority: int
    on_failure: str
    pause_note: str
    labels: _containers.ScalarMap[str, str]
    node_selector: str
    revision: int
    schedule_since: _timestamp_pb2.Timestamp
    previous_schedule: PreviousSchedule
    paused_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., schedule: _Optional[_Union[Schedule, _Mapping]] = ..., http: _Optional[_Union[HttpTarget, _Mapping]] = ..., shell: _Optional[_Union[ShellTarget, _Mapping]] = ..., python: _Optional[_Union[PythonTarget, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., paused: _Optional[bool] = ..., description: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., resumed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., on_owner_lost: _Optional[_Union[OwnerLostPolicy, str]] = ..., overlap: _Optional[_Union[OverlapPolicy, str]] = ..., catch_up: _Optional[_Union[CatchUpPolicy, str]] = ..., catch_up_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., misfire_threshold: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., priority: _Optional[int] = ..., on_failure: _Optional[str] = ..., pause_note: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., node_selector: _Optional[str] = ..., revision: _Optional[int] = ..., schedule_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., previous_schedule: _Optional[_Union[PreviousSchedule, _Mapping]] = ..., paused_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PreviousSchedule(_message.Message):
    __slots__ = ("schedule", "since")
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    schedule: Schedule
    since: _timestamp_pb2.Timestamp
    def __init__(self, schedule: _Optional[_Union[Schedule, _Mapping]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AttemptRecord(_message.Message):
    __slots__ = ("attempt", "node_id", "fencing_token", "status", "started_at", "finished_at", "http_status", "exit_code", "error")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    node_id: str
    fencing_token: int
    status: RunStatus
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    http_status: int
    exit_code: int
    error: str
    def __init__(self, attempt: _Optional[int] = ..., node_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., status: _Optional[_Union[RunStatus, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., http_status: _Optional[int] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class RunRecord(_message.Message):
    __slots__ = ("task_id", "scheduled_at", "node_id", "attempt", "fencing_token", "status", "claimed_at", "started_at", "finished_at", "lateness", "http_status", "exit_code", "output_tail", "error", "manual", "idempotency_key", "claim_lease_id", "history", "next_attempt_at", "skip_reason", "fire_at", "cause", "priority", "skipped_slots", "skipped_from", "tzdata_version", "local_time")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    LATENESS_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TAIL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MANUAL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CLAIM_LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    FIRE_AT_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_SLOTS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FROM_FIELD_NUMBER: _ClassVar[int]
    TZDATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_TIME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    scheduled_at: _timestamp_pb2.Timestamp
    node_id: str
    attempt: int
    fencing_token: int
    status: RunStatus
    claimed_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    lateness: _duration_pb2.Duration
    http_status: int
    exit_code: int
    output_tail: str
    error: str
    manual: bool
    idempotency_key: str
    claim_lease_id: int
    history: _containers.RepeatedCompositeFieldContainer[AttemptRecord]
    next_attempt_at: _timestamp_pb2.Timestamp
    skip_reason: SkipReason
    fire_at: _timestamp_pb2.Timestamp
    cause: RunRecord
    priority: int
    skipped_slots: int
    skipped_from: _timestamp_pb2.Timestamp
    tzdata_version: str
    local_time: str
    def __init__(self, task_id: _Optional[str] = ..., scheduled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_id: _Optional[str] = ..., attempt: _Optional[int] = ..., fencing_token: _Optional[int] = ..., status: _Optional[_Union[RunStatus, str]] = ..., claimed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lateness: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., http_status: _Optional[int] = ..., exit_code: _Optional[int] = ..., output_tail: _Optional[str] = ..., error: _Optional[str] = ..., manual: _Optional[bool] = ..., idempotency_key: _Optional[str] = ..., claim_lease_id: _Optional[int] = ..., history: _Optional[_Iterable[_Union[AttemptRecord, _Mapping]]] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., skip_reason: _Optional[_Union[SkipReason, str]] = ..., fire_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cause: _Optional[_Union[RunRecord, _Mapping]] = ..., priority: _Optional[int] = ..., skipped_slots: _Optional[int] = ..., skipped_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tzdata_version: _Optional[str] = ..., local_time: _Optional[str] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("node_id", "address", "started_at", "version", "owned_tasks", "lease_id", "draining", "suspected_dead", "not_claiming", "active_runs", "run_capacity", "backlog", "tzdata_version", "tzdata_source", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OWNED_TASKS_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    SUSPECTED_DEAD_FIELD_NUMBER: _ClassVar[int]
    NOT_CLAIMING_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_RUNS_FIELD_NUMBER: _ClassVar[int]
    RUN_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    TZDATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TZDATA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    started_at: _timestamp_pb2.Timestamp
    version: str
    owned_tasks: int
    lease_id: int
    draining: bool
    suspected_dead: bool
    not_claiming: bool
    active_runs: int
    run_capacity: int
    backlog: int
    tzdata_version: str
    tzdata_source: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[str] = ..., owned_tasks: _Optional[int] = ..., lease_id: _Optional[int] = ..., draining: _Optional[bool] = ..., suspected_dead: _Optional[bool] = ..., not_claiming: _Optional[bool] = ..., active_runs: _Optional[int] = ..., run_capacity: _Optional[int] = ..., backlog: _Optional[int] = ..., tzdata_version: _Optional[str] = ..., tzdata_source: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateTaskRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: TaskSpec
    def __init__(self, task: _Optional[_Union[TaskSpec, _Mapping]] = ...) -> None: ...

class CreateTasksRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ...) -> None: ...

class CreateTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "label_selector", "include_status", "id_contains", "paused")
    class PausedFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PAUSED_FILTER_UNSPECIFIED: _ClassVar[ListTasksRequest.PausedFilter]
        PAUSED_FILTER_ACTIVE: _ClassVar[ListTasksRequest.PausedFilter]
        PAUSED_FILTER_PAUSED: _ClassVar[ListTasksRequest.PausedFilter]
    PAUSED_FILTER_UNSPECIFIED: ListTasksRequest.PausedFilter
    PAUSED_FILTER_ACTIVE: ListTasksRequest.PausedFilter
    PAUSED_FILTER_PAUSED: ListTasksRequest.PausedFilter
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STATUS_FIELD_NUMBER: _ClassVar[int]
    ID_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    label_selector: str
    include_status: bool
    id_contains: str
    paused: ListTasksRequest.PausedFilter
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., label_selector: _Optional[str] = ..., include_status: _Optional[bool] = ..., id_contains: _Optional[str] = ..., paused: _Optional[_Union[ListTasksRequest.PausedFilter, str]] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token", "statuses")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    next_page_token: str
    statuses: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("task_id", "next_slot", "next_fire_at", "last_run")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_SLOT_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIRE_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    next_slot: _timestamp_pb2.Timestamp
    next_fire_at: _timestamp_pb2.Timestamp
    last_run: RunRecord
    def __init__(self, task_id: _Optional[str] = ..., next_slot: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_fire_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_run: _Optional[_Union[RunRecord, _Mapping]] = ...) -> None: ...

class DeleteTaskRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseTaskRequest(_message.Message):
    __slots__ = ("id", "note")
    ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    id: str
    note: str
    def __init__(self, id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ResumeTaskRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class TriggerTaskRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("task_id", "page_size", "page_token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    page_size: int
    page_token: str
    def __init__(self, task_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunRecord]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RunRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PreviewScheduleRequest(_message.Message):
    __slots__ = ("task_id", "schedule", "count")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    schedule: Schedule
    count: int
    def __init__(self, task_id: _Optional[str] = ..., schedule: _Optional[_Union[Schedule, _Mapping]] = ..., count: _Optional[int] = ..., **kwargs) -> None: ...

class PreviewSlot(_message.Message):
    __slots__ = ("scheduled_at", "fire_at", "local_time", "note")
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    FIRE_AT_FIELD_NUMBER: _ClassVar[int]
    LOCAL_TIME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    scheduled_at: _timestamp_pb2.Timestamp
    fire_at: _timestamp_pb2.Timestamp
    local_time: str
    note: str
    def __init__(self, scheduled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fire_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., local_time: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class PreviewScheduleResponse(_message.Message):
    __slots__ = ("slots", "time_zone", "tzdata_version", "tzdata_source")
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    TZDATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TZDATA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    slots: _containers.RepeatedCompositeFieldContainer[PreviewSlot]
    time_zone: str
    tzdata_version: str
    tzdata_source: str
    def __init__(self, slots: _Optional[_Iterable[_Union[PreviewSlot, _Mapping]]] = ..., time_zone: _Optional[str] = ..., tzdata_version: _Optional[str] = ..., tzdata_source: _Optional[str] = ...) -> None: ...

class AuditTaskRequest(_message.Message):
    __slots__ = ("task_id", "since")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LatenessBucket(_message.Message):
    __slots__ = ("le_ms", "count")
    LE_MS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    le_ms: int
    count: int
    def __init__(self, le_ms: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class MultiClaim(_message.Message):
    __slots__ = ("scheduled_at", "fencing_tokens", "detail")
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    scheduled_at: _timestamp_pb2.Timestamp
    fencing_tokens: _containers.RepeatedScalarFieldContainer[int]
    detail: str
    def __init__(self, scheduled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fencing_tokens: _Optional[_Iterable[int]] = ..., detail: _Optional[str] = ...) -> None: ...

class AuditTaskResponse(_message.Message):
    __slots__ = ("task_id", "since", "until", "expected_slots", "gaps", "gap_count", "multi_claims", "by_status", "lateness", "lateness_p50", "lateness_p99", "lateness_max", "truncated")
    class ByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SLOTS_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    GAP_COUNT_FIELD_NUMBER: _ClassVar[int]
    MULTI_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENESS_FIELD_NUMBER: _ClassVar[int]
    LATENESS_P50_FIELD_NUMBER: _ClassVar[int]
    LATENESS_P99_FIELD_NUMBER: _ClassVar[int]
    LATENESS_MAX_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    expected_slots: int
    gaps: _containers.RepeatedCompositeFieldContainer[_timestamp_pb2.Timestamp]
    gap_count: int
    multi_claims: _containers.RepeatedCompositeFieldContainer[MultiClaim]
    by_status: _containers.ScalarMap[str, int]
    lateness: _containers.RepeatedCompositeFieldContainer[LatenessBucket]
    lateness_p50: _duration_pb2.Duration
    lateness_p99: _duration_pb2.Duration
    lateness_max: _duration_pb2.Duration
    truncated: bool
    def __init__(self, task_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expected_slots: _Optional[int] = ..., gaps: _Optional[_Iterable[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]]] = ..., gap_count: _Optional[int] = ..., multi_claims: _Optional[_Iterable[_Union[MultiClaim, _Mapping]]] = ..., by_status: _Optional[_Mapping[str, int]] = ..., lateness: _Optional[_Iterable[_Union[LatenessBucket, _Mapping]]] = ..., lateness_p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lateness_p99: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lateness_max: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class WatchRunsRequest(_message.Message):
    __slots__ = ("task_id", "replay")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    replay: int
    def __init__(self, task_id: _Optional[str] = ..., replay: _Optional[int] = ...) -> None: ...

class UpdateTaskRequest(_message.Message):
    __slots__ = ("task", "expected_revision")
    TASK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    task: TaskSpec
    expected_revision: int
    def __init__(self, task: _Optional[_Union[TaskSpec, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class TaskRef(_message.Message):
    __slots__ = ("id", "expected_revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_revision: int
    def __init__(self, id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class ApplyTasksRequest(_message.Message):
    __slots__ = ("create", "update", "delete")
    CREATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    create: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    update: _containers.RepeatedCompositeFieldContainer[UpdateTaskRequest]
    delete: _containers.RepeatedCompositeFieldContainer[TaskRef]
    def __init__(self, create: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., update: _Optional[_Iterable[_Union[UpdateTaskRequest, _Mapping]]] = ..., delete: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ...) -> None: ...

class ApplyTasksResponse(_message.Message):
    __slots__ = ("created", "updated", "deleted", "revision")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    created: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    updated: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    deleted: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    def __init__(self, created: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., updated: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., deleted: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ...) -> None: ...

class FieldChange(_message.Message):
    __slots__ = ("field", "before", "after")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    field: str
    before: str
    after: str
    def __init__(self, field: _Optional[str] = ..., before: _Optional[str] = ..., after: _Optional[str] = ...) -> None: ...

class TaskChange(_message.Message):
    __slots__ = ("task_id", "revision", "previous_revision", "changed_at", "principal", "operation", "changes", "node_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_REVISION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    revision: int
    previous_revision: int
    changed_at: _timestamp_pb2.Timestamp
    principal: str
    operation: str
    changes: _containers.RepeatedCompositeFieldContainer[FieldChange]
    node_id: str
    def __init__(self, task_id: _Optional[str] = ..., revision: _Optional[int] = ..., previous_revision: _Optional[int] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., principal: _Optional[str] = ..., operation: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[FieldChange, _Mapping]]] = ..., node_id: _Optional[str] = ...) -> None: ...

class ListTaskHistoryRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ListTaskHistoryResponse(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[TaskChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[TaskChange, _Mapping]]] = ...) -> None: ...

class GetClusterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClusterResponse(_message.Message):
    __slots__ = ("cluster", "node_id", "members", "task_count", "revision", "etcd_alarms", "etcd_db_size_bytes", "etcd_db_size_in_use_bytes", "etcd_compactor", "tzdata_version", "tzdata_pinned", "unschedulable_tasks", "unschedulable_count")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ETCD_ALARMS_FIELD_NUMBER: _ClassVar[int]
    ETCD_DB_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ETCD_DB_SIZE_IN_USE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ETCD_COMPACTOR_FIELD_NUMBER: _ClassVar[int]
    TZDATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TZDATA_PINNED_FIELD_NUMBER: _ClassVar[int]
    UNSCHEDULABLE_TASKS_FIELD_NUMBER: _ClassVar[int]
    UNSCHEDULABLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    node_id: str
    members: _containers.RepeatedCompositeFieldContainer[Member]
    task_count: int
    revision: int
    etcd_alarms: _containers.RepeatedCompositeFieldContainer[EtcdAlarm]
    etcd_db_size_bytes: int
    etcd_db_size_in_use_bytes: int
    etcd_compactor: str
    tzdata_version: str
    tzdata_pinned: bool
    unschedulable_tasks: _containers.RepeatedCompositeFieldContainer[UnschedulableTask]
    unschedulable_count: int
    def __init__(self, cluster: _Optional[str] = ..., node_id: _Optional[str] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., task_count: _Optional[int] = ..., revision: _Optional[int] = ..., etcd_alarms: _Optional[_Iterable[_Union[EtcdAlarm, _Mapping]]] = ..., etcd_db_size_bytes: _Optional[int] = ..., etcd_db_size_in_use_bytes: _Optional[int] = ..., etcd_compactor: _Optional[str] = ..., tzdata_version: _Optional[str] = ..., tzdata_pinned: _Optional[bool] = ..., unschedulable_tasks: _Optional[_Iterable[_Union[UnschedulableTask, _Mapping]]] = ..., unschedulable_count: _Optional[int] = ...) -> None: ...

class UnschedulableTask(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PinTzdataRequest(_message.Message):
    __slots__ = ("version", "unpin", "force")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNPIN_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    version: str
    unpin: bool
    force: bool
    def __init__(self, version: _Optional[str] = ..., unpin: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

class PinTzdataResponse(_message.Message):
    __slots__ = ("version", "pinned")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    version: str
    pinned: bool
    def __init__(self, version: _Optional[str] = ..., pinned: _Optional[bool] = ...) -> None: ...

class EtcdAlarm(_message.Message):
    __slots__ = ("member_id", "alarm")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    member_id: int
    alarm: str
    def __init__(self, member_id: _Optional[int] = ..., alarm: _Optional[str] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Grant(_message.Message):
    __slots__ = ("role", "task_prefixes")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TASK_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    role: str
    task_prefixes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, role: _Optional[str] = ..., task_prefixes: _Optional[_Iterable[str]] = ...) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("principal", "source", "grants", "permissions")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    principal: str
    source: str
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    permissions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, principal: _Optional[str] = ..., source: _Optional[str] = ..., grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., permissions: _Optional[_Iterable[str]] = ...) -> None: ...
