"""rmap walk clients: what reclaim, migration and LRU aging do with a walk.

Each runs the design's walk plus the page-table check, acts on what it
finds, and checks afterwards that it found everything it had to.
"""
