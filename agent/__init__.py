"""dockyard's per-host agent: receives the node's desired tasks over MQTT, drives the local
container engine towards them (pure diff in :mod:`agent.diff`), and reports status back."""
