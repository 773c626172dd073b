"""Decision points as code: the file schema, loading, CEL rules and routing."""
