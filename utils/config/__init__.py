"""The configuration room: what the keys are (``schema``), how a config is read (``load``), and the
files it points at (``files``). It imports nothing else from the project."""
