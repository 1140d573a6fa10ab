"""The cluster profile's Kafka: three KRaft nodes on three loopback addresses.

Each node is a broker and a controller at once (``process.roles=broker,controller``): the
three controllers form the metadata quorum, which survives the loss of any one of them, and
the same three processes hold the three replicas of every partition. Combined roles because
the point of the profile is surviving the loss of one *machine*, which takes a controller
and a broker with it whichever way they are split; separate controllers would double the
JVMs (six on a 2-core machine) for isolation the platform's load does not need (Kafka
recommends separate controllers for large clusters, where broker load could starve the
quorum; docs/services.md says when to switch).

The nodes share the single-node profile's jars (``<state>/kafka/lib``) and one cluster id
(``<state>/kafka-cluster-id``); each keeps its data in ``<state>/kafka-N/data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ops.services import render
from ops.services.kafka import Kafka


class KafkaNode(Kafka):
    """Node ``node_id`` (1-based) of the cluster profile, on ``cluster_hosts[node_id - 1]``."""

    node_id: ClassVar[int]
    starts_with_peers = True

    @property
    def lib_dir(self) -> Path:
        return self.ctx.state_dir / "kafka" / "lib"

    @property
    def cluster_id_file(self) -> Path:
        return self.ctx.state_dir / "kafka-cluster-id"

    @property
    def host(self) -> str:
        return self.ctx.settings.cluster_hosts[self.node_id - 1]

    @property
    def agent_port(self) -> int:
        return self.ctx.settings.cluster_kafka_agent_port

    def ports(self) -> dict[str, int]:
        s = self.ctx.settings
        return {
            "cluster_kafka_port": s.cluster_kafka_port,
            "cluster_kafka_controller_port": s.cluster_kafka_controller_port,
            "cluster_kafka_agent_port": s.cluster_kafka_agent_port,
        }

    def rendered_properties(self) -> str:
        s = self.ctx.settings
        props = render.kafka_cluster_properties(
            node_id=self.node_id,
            hosts=s.cluster_hosts,
            port=s.cluster_kafka_port,
            controller_port=s.cluster_kafka_controller_port,
            agent_port=s.cluster_kafka_agent_port,
            log_dir=self.data_dir,
            agent_keystore=self.agent_keystore,
        )
        return render.render_properties(props)


class KafkaNode1(KafkaNode):
    name = "kafka-1"
    node_id = 1


class KafkaNode2(KafkaNode):
    name = "kafka-2"
    node_id = 2


class KafkaNode3(KafkaNode):
    name = "kafka-3"
    node_id = 3


def cluster_bootstrap(hosts: tuple[str, ...], port: int) -> str:
    """The clients' bootstrap list for the cluster (QILU_KAFKA__BOOTSTRAP)."""
    return ",".join(f"{h}:{port}" for h in hosts)
