"""Training-free student search for a teacher (DisWOT): ``kdbench-search``."""
