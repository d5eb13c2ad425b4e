"""Shared pieces of dockyard: ECS task-definition models, the MQTT wire contract, MQTT and logging helpers."""
__version__ = "0.1.0"
