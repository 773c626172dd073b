"""Bearer tokens with roles scoped to decision points."""
