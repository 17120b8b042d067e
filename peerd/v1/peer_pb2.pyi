from peerd.v1 import scheduler_pb2 as _scheduler_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Rumor(_message.Message):
    __slots__ = ("node_id", "lease_id", "dead")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    lease_id: int
    dead: bool
    def __init__(self, node_id: _Optional[str] = ..., lease_id: _Optional[int] = ..., dead: _Optional[bool] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("from_node", "rumors")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    RUMORS_FIELD_NUMBER: _ClassVar[int]
    from_node: str
    rumors: _containers.RepeatedCompositeFieldContainer[Rumor]
    def __init__(self, from_node: _Optional[str] = ..., rumors: _Optional[_Iterable[_Union[Rumor, _Mapping]]] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("node_id", "lease_id", "draining", "rumors", "claiming", "load")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    RUMORS_FIELD_NUMBER: _ClassVar[int]
    CLAIMING_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    lease_id: int
    draining: bool
    rumors: _containers.RepeatedCompositeFieldContainer[Rumor]
    claiming: bool
    load: Load
    def __init__(self, node_id: _Optional[str] = ..., lease_id: _Optional[int] = ..., draining: _Optional[bool] = ..., rumors: _Optional[_Iterable[_Union[Rumor, _Mapping]]] = ..., claiming: _Optional[bool] = ..., load: _Optional[_Union[Load, _Mapping]] = ...) -> None: ...

class Load(_message.Message):
    __slots__ = ("active_runs", "capacity", "backlog")
    ACTIVE_RUNS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    active_runs: int
    capacity: int
    backlog: int
    def __init__(self, active_runs: _Optional[int] = ..., capacity: _Optional[int] = ..., backlog: _Optional[int] = ...) -> None: ...

class PingReqRequest(_message.Message):
    __slots__ = ("from_node", "target_node", "target_address", "timeout_ms")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TARGET_NODE_FIELD_NUMBER: _ClassVar[int]
    TARGET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    from_node: str
    target_node: str
    target_address: str
    timeout_ms: int
    def __init__(self, from_node: _Optional[str] = ..., target_node: _Optional[str] = ..., target_address: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class PingReqResponse(_message.Message):
    __slots__ = ("reachable", "target_lease_id")
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    TARGET_LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    reachable: bool
    target_lease_id: int
    def __init__(self, reachable: _Optional[bool] = ..., target_lease_id: _Optional[int] = ...) -> None: ...

class GossipRequest(_message.Message):
    __slots__ = ("from_node", "rumors", "claiming")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    RUMORS_FIELD_NUMBER: _ClassVar[int]
    CLAIMING_FIELD_NUMBER: _ClassVar[int]
    from_node: str
    rumors: _containers.RepeatedCompositeFieldContainer[Rumor]
    claiming: bool
    def __init__(self, from_node: _Optional[str] = ..., rumors: _Optional[_Iterable[_Union[Rumor, _Mapping]]] = ..., claiming: _Optional[bool] = ...) -> None: ...

class GossipResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HandoffTask(_message.Message):
    __slots__ = ("task_id", "cursor_ms", "in_flight")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_MS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    cursor_ms: int
    in_flight: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.RunRecord]
    def __init__(self, task_id: _Optional[str] = ..., cursor_ms: _Optional[int] = ..., in_flight: _Optional[_Iterable[_Union[_scheduler_pb2.RunRecord, _Mapping]]] = ...) -> None: ...

class HandoffRequest(_message.Message):
    __slots__ = ("from_node", "from_lease_id", "sender_draining", "tasks")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    FROM_LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_DRAINING_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    from_node: str
    from_lease_id: int
    sender_draining: bool
    tasks: _containers.RepeatedCompositeFieldContainer[HandoffTask]
    def __init__(self, from_node: _Optional[str] = ..., from_lease_id: _Optional[int] = ..., sender_draining: _Optional[bool] = ..., tasks: _Optional[_Iterable[_Union[HandoffTask, _Mapping]]] = ...) -> None: ...

class HandoffResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[_Iterable[str]] = ...) -> None: ...
