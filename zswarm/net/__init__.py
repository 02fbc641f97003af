"""I/O adapters: each wraps one library, translates its errors, decides nothing."""
