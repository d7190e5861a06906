"""streamsonic: a real-time streaming sonification daemon.

Numbers in (stdin or MQTT), music out (FluidSynth audio, MIDI ports, files), with a
streaming LSTM that keeps its hidden state per stream between samples.
"""

__version__ = "0.1.0"
