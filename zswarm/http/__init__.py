"""The HTTP shim: OpenAI-compatible API, federation routes and metrics (Starlette on hypercorn)."""
