"""peft-ray: distributed parameter-efficient fine-tuning on Ray + DeepSpeed.

Importing this package has no side effects: Ray, DeepSpeed and transformers are
imported lazily by the layers that need them.
"""

__version__ = "0.1.0"
