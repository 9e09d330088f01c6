"""kdbench: config-driven knowledge-distillation benchmarks."""

__version__ = "0.1.0"
