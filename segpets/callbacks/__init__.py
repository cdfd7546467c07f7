"""Lightning callbacks of segpets (each in its own module, enabled from configs/callbacks/)."""
