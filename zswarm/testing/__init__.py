"""Public fakes and fixtures for tests and benches (never a replacement for the real proof)."""
