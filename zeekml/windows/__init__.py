"""Bounded per-key histories: per-host flow windows and per-conversation token contexts."""
