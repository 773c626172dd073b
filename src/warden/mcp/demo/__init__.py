"""A demo for the MCP gateway: a bank MCP server, a scripted agent, and files to govern it."""
