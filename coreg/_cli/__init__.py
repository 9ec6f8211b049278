"""Stage commands of the ``coreg`` CLI (one module per stage; each exports ``COMMANDS``)."""
