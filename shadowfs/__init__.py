"""shadowfs: a FUSE volume filesystem that tiers hot extents and evacuates failing devices."""

__version__ = "0.1.0"
