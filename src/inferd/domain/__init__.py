"""Pure rules of Dedicated Inference: no I/O, no HTTP, no database."""
