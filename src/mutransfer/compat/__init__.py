"""Compatibility layers for code written against other µP libraries.

``mutransfer.compat.mup`` is a drop-in for microsoft/mup: change ``import mup`` to
``from mutransfer.compat import mup`` and the same calls run on mutransfer's plan, with mup's
numbers and without its known faults (see docs/migrating-from-mup.md).
"""
