"""The ``coreg`` commands, one module per command (the group is :mod:`coreg.cli`)."""
