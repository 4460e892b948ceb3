"""Executor hosts in cluster mode: :mod:`skns.executor.clusterhosts`, shared with the bench."""

from skns.executor.clusterhosts import LEASE_TTL as LEASE_TTL
from skns.executor.clusterhosts import PARTITIONS as PARTITIONS
from skns.executor.clusterhosts import Feeder as Feeder
from skns.executor.clusterhosts import Host as Host
from skns.executor.clusterhosts import all_records as all_records
from skns.executor.clusterhosts import balanced as balanced
from skns.executor.clusterhosts import check as check
from skns.executor.clusterhosts import feed as feed
from skns.executor.clusterhosts import running as running
from skns.executor.clusterhosts import send_at_once as send_at_once
from skns.executor.clusterhosts import send_batches as send_batches
from skns.executor.clusterhosts import send_pipelined as send_pipelined
from skns.executor.clusterhosts import statement_workload as statement_workload
from skns.executor.clusterhosts import wait_all_ran as wait_all_ran
