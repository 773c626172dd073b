"""The demo bank MCP server (warden.mcp.demo.bank), runnable from the tests' folders."""

from warden.mcp.demo.bank import main

if __name__ == "__main__":
    main()
