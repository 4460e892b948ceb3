"""Cluster mode: several hosts sharing work through a NATS JetStream cluster.

Only imported when ``[cluster] nats`` lists servers; single-host mode never loads nats-py.
"""
