"""A real multi-node Ray cluster on this machine's loopback, for the tests and the benchmark of the batch command's Ray
mode: a head node without CPUs (it runs no worker) and worker nodes of one CPU each, every process of them on
127.0.0.1 (Ray's ``ray.cluster_utils.Cluster``: each node its own raylet and object store, as on separate machines).

Importing this module sets, here and in the processes started from here (the batch command, and the Ray it starts):
- Ray's single-machine switch (pipelines.ray_dispatch.LOOPBACK), before Ray is imported: Ray would otherwise turn
  127.0.0.1 into this machine's network address;
- no memory monitor: Ray kills a worker when the machine's memory is 95 % used, by anyone; on a machine shared with
  other test runs that would kill the tests' workers at random (the batch command handles such a loss as any other,
  and the tests kill workers and remove nodes themselves, at known points).
"""
from __future__ import annotations

import os

import psutil

from pipelines.ray_dispatch import LOOPBACK, sweep_scratch


def loopback_environment() -> None:
    """Ray on this machine as the tests and benchmarks run it (see the module docstring); before Ray is imported."""
    os.environ[LOOPBACK] = "0"
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"


loopback_environment()

NODE = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20, "include_dashboard": False}


class LoopbackCluster:
    def __init__(self, nodes: int = 2, cpus: int = 1):
        from ray._private import ray_constants
        from ray.cluster_utils import Cluster

        if ray_constants.ENABLE_RAY_CLUSTER:
            raise RuntimeError(f"Ray was imported before harness.ray_cluster set {LOOPBACK}=0: it would leave loopback")
        self.cluster = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0})
        self.nodes = [self.cluster.add_node(**{k: v for k, v in NODE.items() if k != "include_dashboard"}, num_cpus=cpus)
                      for _ in range(nodes)]

    @property
    def address(self) -> str:
        return self.cluster.address

    def workers(self, node, method: str | None = None) -> list[psutil.Process]:
        """The batch's edit workers on ``node`` (Ray names its processes ``ray::WorkerHost``, ``ray::WorkerHost.run``
        while it runs a job); ``method``: only those running it."""
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        found = []
        for process in raylet.children(recursive=True):
            try:
                name = process.name()
            except psutil.NoSuchProcess:
                continue
            if name.startswith("ray::WorkerHost") and (method is None or name == f"ray::WorkerHost.{method}"):
                found.append(process)
        return found

    def remove(self, node) -> None:
        """The node leaves as a machine that fails does: its raylet, object store and workers are killed."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.nodes.remove(node)

    def shutdown(self) -> None:
        """The cluster stops; the scratch folders of workers killed on its nodes (a removed node's) go with it."""
        self.cluster.shutdown()
        sweep_scratch(grace_s=10)
