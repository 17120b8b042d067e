"""peerd: a distributed cron/task scheduler on etcd with exactly-once, fenced claims."""

__version__ = "0.1.0"
