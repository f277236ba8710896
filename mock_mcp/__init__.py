"""mock_mcp."""
