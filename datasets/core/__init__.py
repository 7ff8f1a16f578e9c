"""The bottom layer every ntbench package may import: the registry, atomic file writes, the split fractions.

Standard library only, importing no other ntbench module (docs/design.md §Layers). It lives in ``datasets``
because the data layer is the lowest package; ``datasets/__init__`` loads nothing at import, so importing the
core never loads the adapters.
"""
