"""One module per subcommand: ``configure(parser)`` adds its options, ``main(args)`` runs it.

Modules here must not import torch, rtmidi or fluidsynth at import time: ``--help`` loads
them all.
"""
