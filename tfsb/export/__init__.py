"""Train the demo models and publish them as validated, atomically written SavedModel versions."""
