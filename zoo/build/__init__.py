"""zoo.build: rebuild an artifact from its card's recipe (base + compress options) and verify its digests.

Public API: `build(card_or_name, tag=..., store=..., log=..., progress=..., confirm=...) -> BuildResult`,
`find_card`, `buildable(name)` (whether a catalog card can be built here), `estimate_build` (what a build
will download and how long it will take here), and zoo.build.base for fetching bases.
"""

from .build import BuildResult, build, buildable, find_card
from .estimate import BuildEstimate, estimate_build

__all__ = ["BuildEstimate", "BuildResult", "build", "buildable", "estimate_build", "find_card"]
