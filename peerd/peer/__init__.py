"""Node-to-node: the Peer client (:mod:`peerd.peer.client`) and failure detection
(:mod:`peerd.peer.detection`). The servicer is :mod:`peerd.rpc.peer_service`."""
