"""Real third-party stacks: MCP (in process and over stdio), the Claude SDK, Starlette + uvicorn."""
