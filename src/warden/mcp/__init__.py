"""Agents that act: every tool call of an AI agent governed as a Warden decision.

`warden mcp` is a Model Context Protocol gateway between an MCP client and upstream MCP
servers; `warden.tool` does the same for Python functions called in-process.
"""
