"""A tiny real MCP server over stdio, run as a subprocess by the stdio tests."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("adder")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    server.run("stdio")
