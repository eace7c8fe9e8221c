"""interp: automated interpretability of sparse features in language models.

The pipeline runs one way: corpus -> cache -> records -> explain -> score -> publish.
"""

__version__ = "0.1.0"
