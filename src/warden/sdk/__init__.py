"""Python SDK: in-process (`Warden`) or over HTTP (`WardenClient`)."""
