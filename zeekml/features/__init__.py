"""Per-flow numeric features and flow tokens, shared by the trainers and the runtime."""
