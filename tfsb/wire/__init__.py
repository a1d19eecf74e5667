"""Codecs and tables shared by the server and the clients: JSON and TensorProto <-> numpy, the status
table, model specs, models.config text edits. No TensorFlow, no server state."""
