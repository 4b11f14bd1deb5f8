"""The bus between processes (Redis or in-process) and the SSE and WebSocket endpoints."""
