"""zoo.build: rebuild an artifact from its card's recipe (base + compress options) and verify its digests.

Public API: `build(card_or_name, tag=..., store=..., log=...) -> BuildResult`, `find_card`,
`buildable(name)` (whether a catalog card can be built here), and zoo.build.base for fetching bases.
"""

from .build import BuildResult, build, buildable, find_card

__all__ = ["BuildResult", "build", "buildable", "find_card"]
