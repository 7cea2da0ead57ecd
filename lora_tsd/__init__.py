"""lora-tsd-bench: task-specific-direction PEFT methods and the baselines they are compared with."""

__version__ = "0.1.0"
