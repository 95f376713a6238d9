"""Live recognition: frames embedded as they arrive, answers every few seconds (engine), from a camera or stream."""
