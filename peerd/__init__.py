"""peerd: a distributed cron/task scheduler on etcd with exactly-once, fenced claims."""

import os

# gRPC's fork handlers (on by default in the grpcio wheels) make every fork() of a process with
# a live channel wait for gRPC's threads to pause; with calls in flight that wait can last
# forever (a test process starting a node while its client channel was open hung in fork() for
# minutes). peerd never uses gRPC in a forked child: every child it forks (nodes, etcd, shell
# tasks) execs at once. Set before gRPC is first imported; an explicit setting wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
